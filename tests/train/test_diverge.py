"""Divergence (harness.train.diverge): a non-finite training loss, parameter norm or evaluation
loss makes a cell `diverged`, never `completed`, whatever step it happens at; the other cells of
its pack train on unchanged."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from harness.cli.run import main
from harness.train import loop, packed
from tests.conftest import harness_cli
from tests.train.test_step import tiny_run
from tests.train.test_train import assert_same_training

# One full batch per epoch: SGD with alpha = 1e30 blows the weights up on an epoch's last
# step, while the loss computed before that step is still finite.
ONE_STEP = ["dataset=synthetic", "model=small", "dataset.train_subset=64", "train.batch_size=64",
            "train.device=cpu", "logger=none", "optimizer=sgd"]
RECORD = ["run_id", "epoch", "status", "train_loss", "train_error", "test_loss", "test_error",
          "test_error_top5", "val_loss", "val_error", "param_norm", "weight_decay"]


def runs(results) -> dict[float, pd.DataFrame]:
    frames = [pd.read_parquet(p) for p in sorted(results.glob("*/runs/*.parquet"))]
    return {float(df["lr"].iloc[0]): df.sort_values("epoch").reset_index(drop=True)
            for df in frames}


def test_a_cell_blown_up_by_its_last_step_is_diverged_and_not_ranked(tmp_path):
    """The issue's command (with a batch that fits its 64 images): one step, the run's last,
    makes the weights non-finite; the cell is diverged and the report counts it at chance."""
    done = harness_cli(["run", *ONE_STEP, "train.epochs=1", "optimizer.lr=1e30"], tmp_path)
    assert done.returncode == 0, done.stderr
    [df] = runs(tmp_path / "results").values()
    assert list(df["status"]) == ["diverged"], df[RECORD]
    assert math.isnan(df["test_loss"].iloc[0]) and math.isnan(df["test_error"].iloc[0])
    assert not math.isfinite(df["param_norm"].iloc[0])
    report = harness_cli(["report", "default"], tmp_path)
    assert report.returncode == 0, report.stderr
    assert "Warning" not in report.stderr, report.stderr  # no empty seaborn plot either
    cells = pd.read_csv(tmp_path / "results" / "default" / "report" / "cells.csv")
    assert list(cells["status"]) == ["diverged"] and bool(cells["diverged"].iloc[0])
    assert cells["test_error"].iloc[0] == cells["chance"].iloc[0]  # chance, not a result


@pytest.mark.slow
def test_a_pack_cell_blown_up_on_an_epochs_last_step_leaves_the_others_unchanged(tmp_path,
                                                                               monkeypatch):
    """Pack of 3, 2 epochs of one step: the alpha = 1e30 cell is diverged at epoch 1 (its only
    record); the other two are completed, bit-identical to the same pack whose third cell
    does not diverge, and equal to training them alone (to the rounding of grouped convs)."""
    monkeypatch.chdir(tmp_path)

    def study(out: str, lrs: str, pack: int) -> dict[float, pd.DataFrame]:
        assert main([*ONE_STEP, "train.epochs=2", f"optimizer.lr={lrs}", f"train.pack={pack}",
                     f"run.results_dir={tmp_path / out}", "study=s"]) in (0, 1)
        return runs(tmp_path / out)

    pack = study("pack", "[0.01,0.05,1e30]", 3)
    bad = pack.pop(1e30)
    assert list(bad["status"]) == ["diverged"] and list(bad["epoch"]) == [1], bad[RECORD]
    assert not math.isfinite(bad["param_norm"].iloc[0])
    assert math.isnan(bad["test_loss"].iloc[0])
    same_pack = study("same_pack", "[0.01,0.05,0.02]", 3)
    solo = study("solo", "[0.01,0.05]", 1)
    assert sorted(pack) == [0.01, 0.05]
    for lr, df in pack.items():
        assert list(df["status"]) == ["completed"] * 2 and list(df["epoch"]) == [1, 2]
        pd.testing.assert_frame_equal(df[RECORD], same_pack[lr][RECORD])  # bit-identical
        assert list(df["run_id"]) == list(solo[lr]["run_id"])
        assert_same_training(df, solo[lr])


def test_a_non_finite_evaluation_loss_is_diverged(monkeypatch):
    """Finite weights but a NaN test loss (say, logits overflowing in low precision): the cell
    is diverged at that epoch, its record has no test metrics, and it trains no further."""
    evaluate = packed.evaluate_packed

    def nan_for_cell_1(*args, **kwargs):
        out = evaluate(*args, **kwargs)
        out.loss[1] = math.nan
        return out

    monkeypatch.setattr(packed, "evaluate_packed", nan_for_cell_1)
    cells, ds = tiny_run()
    first, second = loop.train(cells, ds, torch.device("cpu"))
    assert [ep.diverged for ep in first] == [False, True]
    assert math.isfinite(first[0].metrics.test_loss)
    assert math.isnan(first[1].metrics.test_loss) and math.isnan(first[1].metrics.test_error)
    assert math.isfinite(first[1].metrics.param_norm)
    assert second[1] is None and not second[0].diverged
