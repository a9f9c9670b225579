"""Sweeps with real processes: resume, fault isolation, two processes on one study."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import CLI_ENV, TINY, harness_cli

pytestmark = pytest.mark.slow
GRID = ["-m", "optimizer.lr=0.01,0.003", "decay.weight_decay=0,0.0001", "train.epochs=1"]
METRICS = ["epoch", "step", "lr_multiplier", "weight_decay", "train_loss", "train_error",
           "test_loss", "test_error", "test_error_top5", "param_norm"]


def sweep(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return harness_cli(["run", *TINY, "study=s", "run.results_dir=results", *args], tmp_path)


def runs(tmp_path: Path) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_parquet(p) for p in (tmp_path / "results/s/runs").glob("*.parquet")}


def test_a_2x2_sweep_completes_and_a_rerun_trains_nothing(tmp_path):
    first = sweep(tmp_path, *GRID)
    assert first.returncode == 0, first.stderr
    assert "4 cells: 4 completed" in first.stdout
    done = runs(tmp_path)
    assert len(done) == 4 and all((df.status == "completed").all() for df in done.values())
    again = sweep(tmp_path, *GRID)
    assert again.returncode == 0 and "4 cells: 4 skipped" in again.stdout
    assert "epoch 1/1" not in again.stdout
    plan = sweep(tmp_path, *GRID[:-1], "train.epochs=2", "run.plan=true", "train.pack=auto")
    assert plan.returncode == 0 and "4 cells: 4 planned" in plan.stdout
    # the plan shows the K each job will train with: auto is 1 on a CPU, K <= the job's cells
    assert "plan: 1 cells of adam/decoupled to train in packs of 1 on cpu" in plan.stdout
    plan = sweep(tmp_path, "optimizer.lr=[0.01,0.003]", "decay.weight_decay=[0,0.0001]",
                 "train.epochs=2", "run.plan=true", "train.pack=3")
    assert "plan: 4 cells of adam/decoupled to train in packs of 3 on cpu" in plan.stdout


def test_sigkill_mid_cell_resumes_from_checkpoint_bit_identical(tmp_path):
    from tests.wandb_reader import history

    cell = ["train.epochs=4", "dataset.train_subset=1024", "logger=wandb"]
    env = dict(os.environ, **CLI_ENV)
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", *TINY, "study=s",
                             "run.results_dir=results", *cell], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    ckpt_dir = tmp_path / "results/s/checkpoints"
    deadline = time.time() + 300
    while not list(ckpt_dir.glob("*.pt")) and time.time() < deadline:
        time.sleep(0.2)
    assert list(ckpt_dir.glob("*.pt")), "no checkpoint appeared"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not runs(tmp_path), "a killed cell must leave no parquet file"
    resumed = sweep(tmp_path, *cell)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch" in resumed.stdout
    assert "epoch 1/4" not in resumed.stdout
    [(run_id, df)] = runs(tmp_path).items()
    assert df["epoch"].tolist() == [1, 2, 3, 4] and (df.status == "completed").all()
    assert not list(ckpt_dir.glob("*.pt")), "checkpoint removed after completion"
    [wandb_run] = (tmp_path / "results/s/wandb").glob("offline-run-*")  # one run, not two
    rows = history(wandb_run / f"run-{run_id}.wandb")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert [r["train_loss"] for r in rows] == df["train_loss"].tolist()
    fresh = harness_cli(["run", *TINY, "study=s", "run.results_dir=fresh", *cell], tmp_path)
    assert fresh.returncode == 0
    ref = pd.read_parquet(tmp_path / f"fresh/s/runs/{run_id}.parquet")
    pd.testing.assert_frame_equal(df[METRICS], ref[METRICS])


def test_a_sweep_with_one_dataset_missing_trains_nothing(tmp_path):
    """Missing data is a fact about the job, checked once before any cell (a cell that fails
    while training is recorded and the sweep goes on: tests/cli/test_run.py, model=broken)."""
    (tmp_path / "missing").mkdir()
    nowhere = {"HARNESS_DATA": str(tmp_path / "missing"), "HARNESS_SYSTEM_DATA": ""}
    proc = harness_cli(["run", *TINY, "study=s", "run.results_dir=results", "-m",
                        "dataset=synthetic,cifar10", "dataset.download=false",
                        f"dataset.root={tmp_path / 'missing'}", "train.epochs=1"], tmp_path,
                       env=nowhere)  # whatever data this machine holds
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "CIFAR-10 not found" in line and "python -m harness data fetch cifar10" in line
    assert not (tmp_path / "results").exists()


def test_two_processes_on_one_study_train_each_cell_once(tmp_path):
    args = [sys.executable, "-m", "harness", "run", *TINY, "study=s", "run.results_dir=results",
            "optimizer.lr=[0.01,0.003,0.001]", "decay.weight_decay=[0,0.0001]"]
    env = dict(os.environ, **CLI_ENV)
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    done = runs(tmp_path)
    assert len(done) == 6 and all((df.status == "completed").all() for df in done.values())
    for run_id in done:
        trained = [line for out in outs for line in out.splitlines()
                   if line.startswith(f"[{run_id} ") and "] epoch 1/2 " in line]
        assert len(trained) == 1, (run_id, outs)
    assert sum("claimed by another process" in out for out in outs) >= 1 or \
        any("6 cells: 6 completed" in out for out in outs)
