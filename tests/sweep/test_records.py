"""harness.sweep.records: one schema, unknown values null, typed columns, provenance (the
harness's own commit, whatever the working directory), modes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

import harness
from harness import fsutil
from harness.config import compose
from harness.spec.records import COLUMNS
from harness.sweep.records import frame, git_sha, write_parquet
from tests.conftest import ROOT, TINY, harness_cli
from tests.test_fsutil import dead_pid, temp

CELL = ["study=r", "dataset=synthetic", "model=small", "optimizer=adam", "optimizer.lr=0.01",
        "decay=decoupled", "decay.weight_decay=0.001", "decay.exclude=['*.bias','bn*']",
        "train.epochs=2", "train.batch_size=64", "train.device=cpu"]


def epoch(n: int) -> dict:
    return {"epoch": n, "step": 8 * n, "lr_multiplier": 0.5, "weight_decay": 0.001,
            "train_loss": 2.0 / n, "train_error": 0.5, "test_loss": 2.1, "test_error": 0.6,
            "test_error_top5": 0.1, "val_loss": float("nan"), "val_error": float("nan"),
            "param_norm": 10.0, "elapsed_s": 1.5 * n,
            "images_per_s": 100.0}


@pytest.fixture
def cfg():
    return compose.cells(CELL)[0]


def test_a_failed_cell_without_data_has_null_metadata_not_zero(tmp_path, cfg):
    path = tmp_path / "f.parquet"
    write_parquet(frame(cfg, [], "failed", "FileNotFoundError: no data"), path)
    df = pd.read_parquet(path)
    assert list(df.columns) == COLUMNS and len(df) == 1
    row = df.iloc[0]
    assert row["epoch"] == 0 and pd.isna(row["n_train"]) and pd.isna(row["num_classes"])
    assert pd.isna(row["device"]) and pd.isna(row["precision"])  # auto on an unknown device
    assert pd.isna(row["test_error"]) and row["error_message"] == "FileNotFoundError: no data"


def test_a_completed_cell_has_typed_columns_and_provenance(tmp_path, cfg):
    path = tmp_path / "c.parquet"
    write_parquet(frame(cfg, [epoch(1), epoch(2)], "completed", n_train=512, num_classes=10,
                        device="cpu"), path)
    schema = pq.read_schema(path)
    assert str(schema.field("decay_exclude").type) == "list<element: string>"
    assert str(schema.field("timestamp").type) == "timestamp[us, tz=UTC]"
    assert str(schema.field("error_message").type) == "string"
    df = pd.read_parquet(path)
    assert df["error_message"].isna().all()               # no error: null, not ""
    assert [list(v) for v in df["decay_exclude"]] == [["*.bias", "bn*"]] * 2
    assert pd.isna(df["weight_decay_norm"]).all()           # not normalized: not applicable
    assert df["n_train"].tolist() == [512, 512] and df["num_classes"].tolist() == [10, 10]
    assert (df["precision"] == "fp32").all()                # auto on a CPU, as trained
    age = pd.Timestamp.now(tz="UTC") - df["timestamp"]
    assert ((age >= pd.Timedelta(0)) & (age < pd.Timedelta(minutes=1))).all()
    assert (df["cpu_threads"] == torch.get_num_threads()).all()
    assert df["cpu_model"].iloc[0]
    assert df["harness_version"].iloc[0] == harness.__version__ != harness.UNKNOWN_VERSION
    assert df["epoch"].tolist() == [1, 2] and df["train_loss"].tolist() == [2.0, 1.0]


GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}


def unrelated_repo(path: Path) -> str:
    """A fresh git repository at `path` with one commit; its HEAD."""
    path.mkdir(parents=True, exist_ok=True)
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(["git", *args], cwd=path, env=dict(os.environ, **GIT_ENV), check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True,
                          text=True, check=True).stdout.strip()


def harness_head() -> str:
    """HEAD of this checkout (the code under test); skip when the tests run outside one."""
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                         text=True)
    if out.returncode:
        pytest.skip("the harness sources are not a git checkout")
    return out.stdout.strip()


@pytest.fixture
def fresh_git_sha():
    git_sha.cache_clear()
    yield git_sha
    git_sha.cache_clear()


def test_git_sha_is_the_harness_checkout_whatever_the_working_directory(
        tmp_path, monkeypatch, cfg, fresh_git_sha):
    head = harness_head()
    other = unrelated_repo(tmp_path / "repo")
    for where in (tmp_path, tmp_path / "repo"):      # outside any repo; inside another one
        monkeypatch.chdir(where)
        fresh_git_sha.cache_clear()
        sha = frame(cfg, [epoch(1)], "diverged")["git_sha"].iloc[0]
        assert sha in (head, f"{head}-dirty") and other not in sha, (where, sha)


def test_a_package_outside_its_checkout_reports_the_commit_its_wheel_was_built_from(
        tmp_path, monkeypatch, fresh_git_sha):
    """site-packages inside an unrelated repository (a venv in a project): not that repo's
    HEAD but harness/_build.json, which setup.py writes into the wheel; null without it."""
    other = unrelated_repo(tmp_path)
    package = tmp_path / "venv/lib/site-packages/harness"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    monkeypatch.setattr(harness, "__file__", str(package / "__init__.py"))
    assert fresh_git_sha() is None
    (package / "_build.json").write_text(json.dumps({"git_sha": "abc123-dirty"}))
    fresh_git_sha.cache_clear()
    assert fresh_git_sha() == "abc123-dirty" != other


@pytest.mark.slow
@pytest.mark.parametrize("where", ["unrelated-repo", "scratch"])
def test_harness_run_records_the_harness_commit_not_the_working_directorys(tmp_path, where):
    head = harness_head()
    work = tmp_path / where
    other = unrelated_repo(work) if where == "unrelated-repo" else None
    work.mkdir(exist_ok=True)
    out = harness_cli(["run", *TINY, "study=prov"], cwd=work)
    assert out.returncode == 0, out.stderr[-2000:]
    [path] = (work / "results/prov/runs").glob("*.parquet")
    shas = set(pd.read_parquet(path)["git_sha"])
    assert shas <= {head, f"{head}-dirty"} and len(shas) == 1, (shas, head, other)


def test_parquet_gets_umask_permissions_and_stale_temp_files_go(tmp_path, cfg):
    path = tmp_path / "runs" / "p.parquet"
    path.parent.mkdir()
    # what a killed writer on this host leaves (fsutil names temp files host.pid.random)
    stale = temp(path, fsutil.host(), dead_pid())
    old = os.umask(0o022)
    try:
        write_parquet(frame(cfg, [epoch(1)], "diverged"), path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not stale.exists() and sorted(p.name for p in path.parent.iterdir()) == ["p.parquet"]


def test_not_applicable_floats_are_typed_nulls(tmp_path, cfg):
    path = tmp_path / "n.parquet"
    write_parquet(frame(cfg, [epoch(1)], "diverged"), path)
    schema = pq.read_schema(path)
    assert str(schema.field("weight_decay_norm").type) == "double"
    assert pq.read_table(path).column("weight_decay_norm").null_count == 1
    assert pd.read_parquet(path)["weight_decay_norm"].dtype == "float64"
