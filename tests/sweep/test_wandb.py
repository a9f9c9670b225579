"""harness.sweep W&B mirror: each cell's own config, one run per cell, rows equal to its parquet
file; a failure to reach W&B warns once and holds for the rest of its command only (a
`WandbMirror` per command, no process state), and a later run mirrors what it missed. Online,
an id counts (the next upload of the cell is `<run_id>-<n>`) only once `wandb.init` accepted it."""

from __future__ import annotations

import hashlib
import json
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
    import wandb

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SILENT", "true")
    study = tmp_path / "c"
    inits = []
    real_init = wandb.init
    monkeypatch.setattr(wandb, "init", lambda **kw: inits.append(kw["id"]) or real_init(**kw))
    capsys.readouterr()
    assert run(tmp_path, "-m", "optimizer.lr=0.01,0.003", "train.epochs=1", "logger=wandb",
               "logger.wandb.project=no/such") == 0
    err = capsys.readouterr().err
    assert err.count("W&B disabled for the rest of this process (UsageError: Invalid project "
                     "name 'no/such'") == 1, err
    assert len(list((study / "runs").glob("*.parquet"))) == 2
    assert len(inits) == 1                        # the second job tried no W&B
    assert not (study / "mirrored").exists()      # an init that raised leaves no id
    assert not (study / "wandb").exists()
    assert run(tmp_path, "optimizer.lr=[0.01,0.003]", "train.epochs=1", "logger=wandb") == 0
    out, err = capsys.readouterr()
    assert "2 cells: 2 skipped" in out and "W&B disabled" not in err, err
    files = sorted((study / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2
    for f in files:
        df = pd.read_parquet(study / "runs" / f"{f.stem.removeprefix('run-')}.parquet")
        assert [r["train_loss"] for r in history(f)] == df.train_loss.tolist()


class _Run:
    """What a fake `wandb.init` returns: the steps it logged, or a connection lost mid-log."""

    def __init__(self, wandb_id: str, lost: bool) -> None:
        self.id, self.lost, self.steps, self.summary, self.finished = wandb_id, lost, [], {}, False

    def log(self, row: dict, step: int) -> None:
        if self.lost:
            raise ConnectionError("connection reset mid-log")
        self.steps.append(step)

    def finish(self) -> None:
        self.finished = True


def fake_init(monkeypatch, *calls: str | None) -> list[_Run]:
    """Replace wandb.init: its n-th call raises ("init": no network, init timeout) or returns a
    run whose logging is cut off ("log") or that logs (None). Returns the runs it created."""
    import wandb

    runs: list[_Run] = []
    plan = iter(calls)

    def init(**kw):
        what = next(plan)
        if what == "init":
            raise TimeoutError("Run initialization has timed out after 30.0 sec.")
        runs.append(_Run(kw["id"], lost=what == "log"))
        return runs[-1]

    monkeypatch.setattr(wandb, "init", init)
    return runs


ONLINE = ["train.epochs=1", "logger=wandb", "logger.wandb.mode=online"]


def the_cell(tmp_path) -> tuple[str, str, object]:
    """The one cell's run_id, its parquet's sha256 and its marker path."""
    (parquet,) = (tmp_path / "c" / "runs").glob("*.parquet")
    return (parquet.stem, hashlib.sha256(parquet.read_bytes()).hexdigest(),
            tmp_path / "c" / "mirrored" / f"{parquet.stem}.json")


def test_an_online_init_that_raised_leaves_no_id_so_the_next_upload_is_the_run_id(
        tmp_path, monkeypatch, capsys):
    """Issue 22: an attempt whose wandb.init raised (no network) created no run on the server;
    the next run's upload of the cell is `<run_id>`, not `<run_id>-1`."""
    monkeypatch.chdir(tmp_path)
    runs = fake_init(monkeypatch, "init", None)
    capsys.readouterr()
    assert run(tmp_path, *ONLINE) == 0
    err = capsys.readouterr().err
    assert err.count("W&B disabled for the rest of this process (TimeoutError") == 1, err
    run_id, digest, marker = the_cell(tmp_path)
    assert not marker.exists() and runs == []
    assert run(tmp_path, *ONLINE) == 0                    # done: skipped, then mirrored
    assert "W&B disabled" not in capsys.readouterr().err
    assert [(r.id, r.steps, r.finished) for r in runs] == [(run_id, [1], True)]
    assert json.loads(marker.read_text()) == {"ids": [run_id], "sha256": digest}


def test_an_online_run_cut_off_after_init_counts_its_id(tmp_path, monkeypatch, capsys):
    """A run whose wandb.init returned exists on the server even if its logging then failed:
    its id counts, so the next upload is `<run_id>-1`; an init that raised before it counts
    nothing (the ids are `<run_id>`, `<run_id>-1`, not `-1`, `-2`)."""
    monkeypatch.chdir(tmp_path)
    runs = fake_init(monkeypatch, "init", "log", None)
    capsys.readouterr()
    assert run(tmp_path, *ONLINE) == 0                    # wandb.init raises: no id
    run_id, digest, marker = the_cell(tmp_path)
    assert capsys.readouterr().err.count("W&B disabled") == 1 and not marker.exists()
    assert run(tmp_path, *ONLINE) == 0                    # init returns, logging cut off
    err = capsys.readouterr().err
    assert err.count("W&B disabled for the rest of this process (ConnectionError") == 1, err
    assert json.loads(marker.read_text()) == {"ids": [run_id], "sha256": None}
    assert run(tmp_path, *ONLINE) == 0                    # the whole run uploaded
    assert "W&B disabled" not in capsys.readouterr().err
    assert [(r.id, r.steps, r.finished) for r in runs] == [
        (run_id, [], True), (f"{run_id}-1", [1], True)]
    assert json.loads(marker.read_text()) == {"ids": [run_id, f"{run_id}-1"], "sha256": digest}
