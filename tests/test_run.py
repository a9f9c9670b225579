"""harness.run + harness.cells: one command trains cells and records every epoch."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from harness.records import COLUMNS
from harness.run import main

from .conftest import TINY, fashion_mnist_root, harness_cli


def run(tmp_path, *overrides):
    return main([*TINY, f"run.results_dir={tmp_path / 'results'}", "study=t", *overrides])


def parquet_files(tmp_path, study="t"):
    return sorted((tmp_path / "results" / study / "runs").glob("*.parquet"))


def test_one_cell_trains_and_writes_every_contract_column(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(tmp_path) == 0
    [path] = parquet_files(tmp_path)
    df = pd.read_parquet(path)
    assert list(df.columns) == COLUMNS
    assert df["epoch"].tolist() == [1, 2]
    assert (df["status"] == "completed").all()
    assert df["train_loss"].iloc[1] < df["train_loss"].iloc[0]
    assert df["test_error"].iloc[-1] < 0.6          # 10 classes: chance is 0.9
    assert df["lr_multiplier"].iloc[-1] == pytest.approx(0.0, abs=1e-9)  # cosine ends at 0
    assert df["run_id"].iloc[0] == path.stem
    assert not list((tmp_path / "results" / "t" / "checkpoints").glob("*.pt"))


def test_lists_train_the_cross_product_and_done_cells_are_skipped(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = ["optimizer.lr=[0.001,0.003]", "decay.weight_decay=[0,0.0001]", "train.epochs=1"]
    assert run(tmp_path, *grid) == 0
    files = parquet_files(tmp_path)
    assert len(files) == 4
    stamps = [f.stat().st_mtime_ns for f in files]
    capsys.readouterr()
    assert run(tmp_path, *grid) == 0
    out = capsys.readouterr().out
    assert out.count("skipped: already completed") == 4
    assert "4 cells: 4 skipped" in out
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert run(tmp_path, *grid[:1], "decay.weight_decay=0", "train.epochs=1",
               "run.force=true") == 0
    assert sum(f.stat().st_mtime_ns != s for f, s in zip(files, stamps, strict=True)) == 2


def test_same_seed_same_metrics_and_another_seed_differs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(tmp_path) == 0
    first = pd.read_parquet(parquet_files(tmp_path)[0])
    assert run(tmp_path, "run.force=true") == 0
    again = pd.read_parquet(parquet_files(tmp_path)[0])
    metrics = ["train_loss", "train_error", "test_loss", "test_error", "param_norm"]
    pd.testing.assert_frame_equal(first[metrics], again[metrics])
    assert run(tmp_path, "seed=1") == 0
    other = [pd.read_parquet(p) for p in parquet_files(tmp_path) if p.stem != first.run_id[0]]
    assert other[0]["train_loss"].iloc[0] != first["train_loss"].iloc[0]


def test_divergence_is_a_result_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(tmp_path, "optimizer=sgd", "decay=l2", "optimizer.lr=1e6", "train.epochs=3") == 0
    df = pd.read_parquet(parquet_files(tmp_path)[0])
    assert (df["status"] == "diverged").all()
    assert len(df) < 3 and math.isnan(df["test_error"].iloc[-1])


def test_a_missing_dataset_is_a_failed_cell_with_its_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(tmp_path, "dataset=cifar10", "dataset.download=false",
               f"dataset.root={tmp_path / 'nowhere'}") == 1
    df = pd.read_parquet(parquet_files(tmp_path)[0])
    assert df["status"].tolist() == ["failed"] and df["epoch"].tolist() == [0]
    assert "cifar" in df["error_message"].iloc[0].lower()


@pytest.mark.parametrize("override,message", [
    ("optimizer=adamw", "optimizer=adamw is not valid; choose one of: adam, rmsprop, sgd"),
    ("train.epochs=0", "train.epochs=0 is not valid"),
    ("optimizer.lr=-1", "optimizer.lr=-1 is not valid"),
    ("decay.weight_decay=nan", "decay.weight_decay=nan is not valid"),
    ("train.batch_size=100000", "train.batch_size=100000 is larger than the training set"),
    ("optimizer.lrr=3", "optimizer.lrr is not a valid key"),
    ("dataset=cifar100", "dataset=cifar100 is not valid; choose one of: cifar10,"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, override, message):
    proc = harness_cli(["run", *TINY, "study=t", "run.results_dir=results", override], tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_fashion_mnist_small_model_under_20_percent_error(tmp_path, monkeypatch):
    root = fashion_mnist_root()
    monkeypatch.chdir(tmp_path)
    assert main(["dataset=fashion_mnist", f"dataset.root={root}", "dataset.train_subset=10000",
                 "model=small", "optimizer=adam", "decay=decoupled", "optimizer.lr=0.003",
                 "dataset.augment=false", "train.epochs=2", "train.batch_size=64",
                 "train.device=cpu", "logger=none", "logger.progress=none", "study=f",
                 f"run.results_dir={tmp_path / 'results'}"]) == 0
    df = pd.read_parquet(parquet_files(tmp_path, "f")[0])
    assert df["n_train"].iloc[0] == 10000
    assert df["test_error"].iloc[-1] < 0.20


def test_wandb_offline_history_has_one_entry_per_epoch(tmp_path, monkeypatch):
    from .wandb_reader import history

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert run(tmp_path, "logger=wandb", "logger.progress=none") == 0
    [run_file] = (tmp_path / "results" / "t" / "wandb").glob("offline-run-*/run-*.wandb")
    rows = history(run_file)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
