"""harness.sweep W&B mirror: each cell's own config, one run per cell, rows equal to its parquet
file; a failure to reach W&B warns once and holds for the rest of its command only (a
`WandbMirror` per command, no process state), and a later run mirrors what it missed."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.conftest import CLI_ENV, TINY
from tests.sweep.test_cells import run
from tests.wandb_reader import config, history


def test_wandb_logs_the_cells_own_config_and_force_leaves_one_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SILENT", "true")
    grid = ["logger=wandb", "optimizer.lr=[0.01,0.003]", "decay.weight_decay=[0,0.001]",
            "train.epochs=2"]
    assert run(tmp_path, *grid) == 0
    assert run(tmp_path, *grid[:2], "decay.weight_decay=0", "train.epochs=2",
               "run.force=true") == 0
    files = sorted((tmp_path / "c" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 4 and not (tmp_path / "c" / "wandb" / "wandb").exists()
    seen = set()
    for f in files:
        logged = config(f)
        lr, wd = logged["optimizer"]["lr"], logged["decay"]["weight_decay"]
        seen.add((lr, wd))
        df = pd.read_parquet(tmp_path / "c" / "runs" / f"{logged['run_id']}.parquet")
        rows = history(f)
        assert [r["epoch"] for r in rows] == df.epoch.tolist() == [1, 2]
        assert [r["train_loss"] for r in rows] == df.train_loss.tolist()
        assert df.lr.iloc[0] == lr and logged["train"]["epochs"] == 2
    assert seen == {(0.01, 0.0), (0.01, 0.001), (0.003, 0.0), (0.003, 0.001)}


@pytest.mark.slow
def test_wandb_online_without_network_stalls_once_and_warns_once(tmp_path):
    env = dict(os.environ, **CLI_ENV, WANDB_BASE_URL="http://127.0.0.1:9",
               WANDB_API_KEY="0" * 40)
    args = [sys.executable, "-m", "harness", "run", *TINY, "train.epochs=1", "study=c",
            "run.results_dir=results", "logger=wandb", "logger.wandb.mode=online",
            "optimizer.lr=[0.01,0.003,0.001]"]
    tic = time.perf_counter()
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240)
    seconds = time.perf_counter() - tic
    assert proc.returncode == 0 and "3 cells: 3 completed" in proc.stdout, proc.stderr
    assert proc.stderr.count("W&B disabled for the rest of this process") == 1, proc.stderr
    assert seconds < 75, f"{seconds:.0f} s: W&B stalled more than once"


def test_cells_done_without_wandb_are_mirrored_by_the_next_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SILENT", "true")
    grid = ["optimizer.lr=[0.01,0.003]", "train.epochs=1"]
    assert run(tmp_path, *grid) == 0                       # logger=none: no W&B
    assert not (tmp_path / "c" / "wandb").exists()
    capsys.readouterr()
    assert run(tmp_path, *grid, "logger=wandb") == 0
    out = capsys.readouterr().out
    assert "2 cells: 2 skipped" in out and "] epoch" not in out
    files = sorted((tmp_path / "c" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2 and all([r["epoch"] for r in history(f)] == [1] for f in files)
    assert run(tmp_path, *grid, "logger=wandb") == 0       # mirrored once, not again
    assert sorted((tmp_path / "c" / "wandb").glob("offline-run-*/run-*.wandb")) == files


def test_a_wandb_failure_holds_for_the_rest_of_its_command_not_the_next(
        tmp_path, monkeypatch, capsys):
    """A command whose W&B fails (an invalid project: wandb.init raises at once) warns once and
    skips W&B for its later cells, also those of its other Hydra jobs (-m, one process); the
    next command in this very process mirrors every cell: no state outlives a command."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SILENT", "true")
    study = tmp_path / "c"
    capsys.readouterr()
    assert run(tmp_path, "-m", "optimizer.lr=0.01,0.003", "train.epochs=1", "logger=wandb",
               "logger.wandb.project=no/such") == 0
    err = capsys.readouterr().err
    assert err.count("W&B disabled for the rest of this process (UsageError: Invalid project "
                     "name 'no/such'") == 1, err
    assert len(list((study / "runs").glob("*.parquet"))) == 2
    assert len(list((study / "mirrored").glob("*.json"))) == 1   # the second job tried no W&B
    assert not (study / "wandb").exists()
    assert run(tmp_path, "optimizer.lr=[0.01,0.003]", "train.epochs=1", "logger=wandb") == 0
    out, err = capsys.readouterr()
    assert "2 cells: 2 skipped" in out and "W&B disabled" not in err, err
    files = sorted((study / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2
    for f in files:
        df = pd.read_parquet(study / "runs" / f"{f.stem.removeprefix('run-')}.parquet")
        assert [r["train_loss"] for r in history(f)] == df.train_loss.tolist()
