"""run.force=true survives an interruption (harness.sweep.force): a forced command killed and
started again keeps the cells it already retrained and resumes the killed one from its own
checkpoint; one that ran to the end retrains everything when started again; the workers of a
forced grid share one force."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.config import compose
from harness.sweep import force as force_mod
from harness.sweep.cells import claim, run_cells
from harness.sweep.recorder import CellPaths
from tests.conftest import CLI_ENV, TINY, harness_cli

METRICS = ["epoch", "step", "train_loss", "train_error", "test_loss", "test_error", "param_norm"]
GRID = ["optimizer.lr=[0.01,0.003]", "train.checkpoint_every=1", "study=c"]


def marks(results: Path) -> list[str]:
    folder = results / "c" / "forced"
    return sorted(p.name for p in folder.glob("*.json")) if folder.exists() else []


@pytest.mark.slow
def test_a_killed_forced_sweep_goes_on_and_a_finished_one_retrains_again(tmp_path):
    results = tmp_path / "results"
    args = ["run", *TINY, "train.epochs=4", *GRID, f"run.results_dir={results}"]
    first, second = compose.cells(args[1:])
    p1, p2 = CellPaths.of(first), CellPaths.of(second)

    done = harness_cli(args, tmp_path)
    assert done.returncode == 0, done.stderr
    fresh = {c.run_id: pd.read_parquet(CellPaths.of(c).parquet) for c in (first, second)}
    assert marks(results) == []                     # a run that is not forced leaves no mark
    cell2 = p2.parquet.read_bytes()

    before = p1.parquet.stat().st_mtime_ns
    forced = subprocess.Popen([sys.executable, "-m", "harness", *args, "run.force=true"],
                              cwd=tmp_path, env=dict(os.environ, **CLI_ENV),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (p1.parquet.stat().st_mtime_ns != before and p2.checkpoint.exists()):
            assert forced.poll() is None, forced.stdout.read()
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        forced.send_signal(signal.SIGKILL)
        out = forced.communicate()[0]
    assert "epoch 1/4" in out and f"[{second.run_id} " in out
    assert p2.parquet.read_bytes() == cell2     # killed before cell 2 was recorded
    assert len(marks(results)) == 1                 # killed: the force goes on next time
    cell1 = p1.parquet.read_bytes()

    again = harness_cli([*args, "run.force=true"], tmp_path)   # a Slurm requeue
    assert again.returncode == 0, again.stderr
    skipped = [x for x in again.stdout.splitlines() if f"[{first.run_id} " in x]
    assert len(skipped) == 1 and "skipped: already completed" in skipped[0], again.stdout
    assert "retrained by this run.force" in skipped[0]
    assert p1.parquet.read_bytes() == cell1
    [resumed] = [x for x in again.stdout.splitlines() if "resuming after epoch" in x]
    assert resumed.startswith(f"[{second.run_id} ")
    n = int(resumed.rsplit(" ", 1)[1])
    assert 1 <= n < 4 and f"epoch {n + 1}/4" in again.stdout and f"epoch {n}/4" not in again.stdout
    assert "2 cells: 1 completed, 1 skipped" in again.stdout
    for cfg in (first, second):
        df = pd.read_parquet(CellPaths.of(cfg).parquet)
        assert (df.status == "completed").all()
        pd.testing.assert_frame_equal(df[METRICS], fresh[cfg.run_id][METRICS])
    assert marks(results) == [] and not p2.checkpoint.exists()   # that force has ended

    stamps = [p.parquet.stat().st_mtime_ns for p in (p1, p2)]
    later = harness_cli([*args, "run.force=true"], tmp_path)   # force again: retrain all
    assert later.returncode == 0, later.stderr
    assert "skipped" not in later.stdout and "resuming" not in later.stdout
    assert "2 cells: 2 completed" in later.stdout
    for cfg, stamp in zip((first, second), stamps, strict=True):
        assert f"[{cfg.run_id} adam/decoupled lr=" in later.stdout
        assert CellPaths.of(cfg).parquet.stat().st_mtime_ns != stamp
        pd.testing.assert_frame_equal(pd.read_parquet(CellPaths.of(cfg).parquet)[METRICS],
                                      fresh[cfg.run_id][METRICS])
    assert marks(results) == []

    plain = harness_cli(args, tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "2 cells: 2 skipped" in plain.stdout and marks(results) == []


@pytest.mark.slow
def test_two_workers_of_a_forced_grid_share_one_force(tmp_path, monkeypatch, capsys):
    """Worker 0 retrains the cell it gets while worker 1 holds the other; it keeps the mark.
    Worker 1 then skips what worker 0 retrained, trains its own, and ends the force."""
    monkeypatch.chdir(tmp_path)
    grid = [*TINY, "dataset.train_subset=128", "optimizer.lr=[0.01,0.003]", "study=c",
            f"run.results_dir={tmp_path}", "run.force=true"]
    w0 = compose.cells([*grid, "run.worker=0"])
    w1 = compose.cells([*grid, "run.worker=1"])
    assert [c.run_id for c in w0] == [c.run_id for c in w1]
    assert force_mod.mark_path(w0) == force_mod.mark_path(w1)
    a, b = w0
    with claim(CellPaths.of(b).claim) as held:      # worker 1 is training b
        assert held
        assert run_cells(w0) == {a.run_id: "completed", b.run_id: "claimed"}
    assert marks(tmp_path) == [force_mod.mark_path(w0).name]
    a_bytes = CellPaths.of(a).parquet.read_bytes()
    capsys.readouterr()
    assert run_cells(w1) == {a.run_id: "skipped", b.run_id: "completed"}
    assert "going on with this forced run" in capsys.readouterr().out
    assert CellPaths.of(a).parquet.read_bytes() == a_bytes
    assert marks(tmp_path) == []                    # the last worker ended the force
    assert run_cells(w0) == {a.run_id: "completed", b.run_id: "completed"}   # force again
    assert marks(tmp_path) == []


def test_a_run_that_is_not_forced_or_only_plans_leaves_no_mark(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = [*TINY, "dataset.train_subset=128", "train.epochs=1", "study=c",
            f"run.results_dir={tmp_path}"]
    [cfg] = compose.cells(base)
    assert run_cells([cfg]) == {cfg.run_id: "completed"}
    assert run_cells(compose.cells([*base, "run.force=true", "run.plan=true"])) == \
        {cfg.run_id: "done"}
    assert run_cells([cfg]) == {cfg.run_id: "skipped"}
    assert not (tmp_path / "c" / "forced").exists()
