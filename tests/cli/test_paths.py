"""Relative paths mean the folder `harness run` was started in, whatever Hydra's job folders.

run.results_dir, dataset.root, dataset.path and logger.wandb.dir, given relative, resolve against
the launch directory under `hydra.job.chdir=true`, a moved `hydra.run.dir`/`hydra.sweep.dir`,
single runs and `-m` sweeps alike; a cell's run_id is the same with and without chdir, so a
second command skips what the first trained, wherever Hydra put its job folders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.config import compose
from tests.conftest import TINY, harness_cli

SKIPPED = "skipped: already completed"


def cmd(study: str, *extra: str) -> list[str]:
    """`harness run` on conftest.TINY (one epoch), `extra` replacing the keys it names; the
    results dir is the default, relative `results`."""
    extra = ("train.epochs=1", *extra)
    keys = {o.split("=", 1)[0] for o in extra if "=" in o}
    return ["run", *[o for o in TINY if o.split("=", 1)[0] not in keys], f"study={study}",
            *extra]


def run_ids(tmp_path: Path, study: str) -> list[str]:
    return sorted(p.stem for p in (tmp_path / "results" / study / "runs").glob("*.parquet"))


def expected_ids(study: str, *overrides: str) -> list[str]:
    """The run_ids the same command composes without any Hydra folder option."""
    words = [o for o in cmd(study, *overrides)[1:] if "=" in o and not o.startswith("hydra.")]
    return sorted(c.run_id for c in compose.cells(words))


def ok(proc) -> str:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def nothing_else_written(tmp_path: Path) -> None:
    """No parquet outside <cwd>/results (e.g. in a Hydra job folder)."""
    stray = [p for p in tmp_path.rglob("*.parquet")
             if p.relative_to(tmp_path).parts[0] != "results"]
    assert not stray, stray


@pytest.mark.slow
def test_chdir_single_run_writes_under_the_launch_dir_and_is_skipped_again(tmp_path):
    study = "chdir1"
    out = ok(harness_cli(cmd(study, "hydra.job.chdir=true"), tmp_path))
    assert "1 cells: 1 completed" in out
    ids = run_ids(tmp_path, study)
    assert ids == expected_ids(study)
    nothing_else_written(tmp_path)
    again = ok(harness_cli(cmd(study, "hydra.job.chdir=true"), tmp_path))
    assert again.count(SKIPPED) == 1 and "1 cells: 1 skipped" in again
    plain = ok(harness_cli(cmd(study), tmp_path))  # the same cell without chdir
    assert plain.count(SKIPPED) == 1 and "1 cells: 1 skipped" in plain
    assert run_ids(tmp_path, study) == ids


@pytest.mark.slow
def test_chdir_sweep_elsewhere_writes_under_the_launch_dir_and_is_skipped_again(tmp_path):
    study = "chdir2"
    sweep = ["-m", "optimizer.lr=0.003,0.01", "hydra.job.chdir=true",
             "hydra.sweep.dir=elsewhere"]
    out = ok(harness_cli(cmd(study, *sweep), tmp_path))
    assert "2 cells: 2 completed" in out
    assert (tmp_path / "elsewhere").is_dir()  # Hydra's job folders went where they were told
    ids = run_ids(tmp_path, study)
    assert len(ids) == 2
    assert ids == sorted(expected_ids(study, "optimizer.lr=0.003")
                         + expected_ids(study, "optimizer.lr=0.01"))
    nothing_else_written(tmp_path)
    again = ok(harness_cli(cmd(study, *sweep), tmp_path))
    assert again.count(SKIPPED) == 2 and "2 cells: 2 skipped" in again
    assert run_ids(tmp_path, study) == ids


def test_chdir_relative_npz_path_is_read_from_the_launch_dir(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "mine.npz",
             x_train=rng.integers(0, 256, (256, 8, 8), dtype=np.uint8),
             y_train=rng.integers(0, 10, 256), x_test=rng.integers(0, 256, (64, 8, 8),
                                                                 dtype=np.uint8),
             y_test=rng.integers(0, 10, 64))
    study = "chdir_npz"
    npz = ["dataset=npz", "dataset.path=data/mine.npz", "dataset.train_subset=null",
           "dataset.test_subset=null"]
    out = ok(harness_cli(cmd(study, *npz, "hydra.job.chdir=true"), tmp_path))
    assert "1 cells: 1 completed" in out
    ids = run_ids(tmp_path, study)
    assert ids == expected_ids(study, *npz)  # dataset.path hashed as typed, not made absolute
    [path] = (tmp_path / "results" / study / "runs").glob("*.parquet")
    assert (pd.read_parquet(path)["status"] == "completed").all()
    nothing_else_written(tmp_path)
    plain = ok(harness_cli(cmd(study, *npz), tmp_path))  # the same cell without chdir
    assert plain.count(SKIPPED) == 1 and "1 cells: 1 skipped" in plain
