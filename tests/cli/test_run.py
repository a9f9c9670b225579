"""harness.cli.run + harness.sweep.cells: one command trains cells and records every epoch."""

from __future__ import annotations

import math
import os

import pandas as pd
import pytest
import torch
from torch import nn

from harness.cli.run import main
from harness.spec.records import COLUMNS
from tests.conftest import TINY, fashion_mnist_root, harness_cli

NO_NET = "http://127.0.0.1:9"  # a proxy that refuses: downloads fail at once, even in CI


def run(tmp_path, *overrides):
    """`harness run` in this process: TINY with `overrides` replacing the keys they name."""
    keys = {o.split("=", 1)[0] for o in overrides}
    base = [o for o in TINY if o.split("=", 1)[0] not in keys]
    return main([*base, f"run.results_dir={tmp_path / 'results'}", "study=t", *overrides])


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


@pytest.mark.parametrize("data,message", [
    (["dataset.download=false"], "CIFAR-10 not found in "),
    (["dataset.download=false", "dataset.root=nowhere"], "dataset.root=nowhere is not a dir"),
    (["dataset.download=true", "dataset.root=fresh"], "cifar10 is not in fresh, "),
    (["dataset.download=false", "dataset.root=corrupt"], "corrupt CIFAR-10 batch corrupt/"),
])
def test_missing_or_corrupt_data_is_one_line_before_any_cell(tmp_path, data, message):
    """Checked once before any cell is claimed: exit 2, one line, nothing written (here the
    download cannot reach the internet, or is refused as corrupt)."""
    (tmp_path / "corrupt").mkdir()
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                 "data_batch_5", "test_batch"):
        (tmp_path / "corrupt" / name).write_bytes(b"not a pickle")
    before = sorted(tmp_path.iterdir())
    proc = harness_cli(["run", "-m", *TINY, "dataset=cifar10", "optimizer.lr=0.1,0.01",
                        "logger=wandb", *data], tmp_path, timeout=120,
                       env={"HTTPS_PROXY": NO_NET, "HTTP_PROXY": NO_NET,  # and whatever
                            "HARNESS_DATA": str(tmp_path / "no-data"),  # data the machine holds
                            "HARNESS_SYSTEM_DATA": ""})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "download" in lines[0]  # says how to get it
    assert sorted(tmp_path.iterdir()) == before  # no results/, outputs/, wandb/ or data/


def test_make_sweep_without_the_data_ends_at_once_and_writes_nothing(tmp_path):
    import shutil
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tests.conftest import CLI_ENV, ROOT

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = Path(sys.executable).parent.parent
    env = dict(os.environ, **CLI_ENV, HARNESS_DATA=str(tmp_path / "empty"))
    start = time.monotonic()
    proc = subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), "-o",
                           f"{venv}/bin/harness", f"VENV={venv}", "sweep",
                           "EXPERIMENT=fig2_lite", "ARGS=dataset.download=false"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 30
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("make")]
    assert len(errors) == 1 and "CIFAR-10 not found" in errors[0], proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_make_test_and_demo_create_the_environment_when_missing(tmp_path):
    """`make -n`: what make would run with no environment at VENV (nothing is executed)."""
    import shutil
    import subprocess

    from tests.conftest import ROOT

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"
    for target in ("test", "demo"):
        lines = subprocess.run(["make", "-n", "-C", str(ROOT), f"VENV={venv}", target],
                               capture_output=True, text=True, check=True).stdout.splitlines()
        install = next(i for i, line in enumerate(lines) if "pip install -q -e" in line)
        runs = [i for i, line in enumerate(lines) if "-m pytest" in line or "harness run" in line]
        assert runs and install < runs[0], lines
    demo = next(line for line in lines if "harness run" in line)
    assert demo.rstrip().endswith("harness run -m +experiment=demo"), demo  # no dev-only path


class TinyMLP(nn.Module):
    """A model added the documented way: a module that calls `harness.train.models.register` plus a
    YAML of its own (model/tiny.yaml); config.py validates against that one registry."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, packs: int = 1):
        super().__init__()
        assert packs == 1
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, 32),
                                 nn.ReLU(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Broken(TinyMLP):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this model cannot run")


@pytest.fixture
def user_models(tmp_path):
    from harness.train import models

    models.register("tiny")(TinyMLP)
    models.register("broken")(Broken)
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    for name in ("tiny", "broken"):
        (conf / f"{name}.yaml").write_text(f"name: {name}\n")
    yield ["--config-dir", str(conf.parent)]
    for name in ("tiny", "broken"):
        del models.MODELS[name]


def test_a_registered_model_with_its_yaml_trains_a_cell(tmp_path, monkeypatch, user_models):
    monkeypatch.chdir(tmp_path)
    assert run(tmp_path, *user_models, "model=tiny") == 0
    [path] = parquet_files(tmp_path)
    df = pd.read_parquet(path)
    assert (df["model"] == "tiny").all() and (df["status"] == "completed").all()
    assert df["test_error"].iloc[-1] < 0.8  # chance: 0.9


def test_summary_and_exit_code_come_from_the_cells_run_whatever_hydra_dirs(
        tmp_path, monkeypatch, capsys, user_models):
    monkeypatch.chdir(tmp_path)
    for dirs in (["hydra.run.dir=elsewhere/run"], ["-m", "hydra.sweep.dir=elsewhere/sweep"]):
        capsys.readouterr()
        assert run(tmp_path, *user_models, *dirs, "model=broken", "train.epochs=1") == 1
        assert "harness run: 1 cells: 1 failed" in capsys.readouterr().out
    assert run(tmp_path, *user_models, "hydra.run.dir=elsewhere/run", "model=tiny",
               "train.epochs=1") == 0
    assert "harness run: 1 cells: 1 completed" in capsys.readouterr().out
    assert not (tmp_path / "results" / ".outcomes").exists()


def test_chdir_job_writes_under_the_launch_dir_and_finds_its_cells_again(tmp_path, monkeypatch,
                                                                         capsys):
    """hydra.job.chdir=true on the basic launcher (in this process): the relative results dir
    is the launch directory's, the run_id is the one without chdir, and the cwd comes back."""
    monkeypatch.chdir(tmp_path)
    chdir = ["run.results_dir=results", "hydra.job.chdir=true", "train.epochs=1"]
    assert run(tmp_path, *chdir) == 0
    [path] = parquet_files(tmp_path)
    assert not [p for p in tmp_path.rglob("*.parquet") if p != path]
    assert os.getcwd() == str(tmp_path)
    capsys.readouterr()
    assert run(tmp_path, *chdir[:1], "train.epochs=1") == 0  # the same cell, without chdir
    out = capsys.readouterr().out
    assert "skipped: already completed" in out and "1 cells: 1 skipped" in out
    assert parquet_files(tmp_path) == [path]


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
    from tests.wandb_reader import history

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert run(tmp_path, "logger=wandb", "logger.progress=none") == 0
    [run_file] = (tmp_path / "results" / "t" / "wandb").glob("offline-run-*/run-*.wandb")
    rows = history(run_file)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
