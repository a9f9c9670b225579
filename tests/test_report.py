"""report.py end to end on small planted studies written as real parquet files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from harness import report

GRID = [2.0**k for k in range(-9, -4)]  # lambda grid, 5 values; alpha grid is GRID * 2


def write_run(runs: Path, *, optimizer: str, decay: str, lr: float, lam: float, final: float,
              epochs: int = 4, status: str = "completed", normalized: bool = False) -> None:
    """A cell with an exponential learning curve ending at ``final`` test error."""
    n = 0 if status == "failed" else epochs
    epoch = np.arange(1, n + 1) if n else np.array([0])
    err = final + 0.3 * np.exp(-(epoch - 1.0)) * (epoch < epochs) if n else np.array([np.nan])
    if status == "diverged":
        err = np.where(epoch == n, np.nan, err)
    run_id = f"{optimizer}_{decay}_{lr:g}_{lam:g}_{epochs}"
    pd.DataFrame({
        "run_id": run_id, "study": runs.parent.name, "status": status,
        "error_message": "CUDA out of memory" if status == "failed" else "",
        "dataset": "cifar10", "model": "resnet20", "optimizer": optimizer, "decay": decay,
        "lr": lr, "weight_decay": math.nan if status == "failed" and normalized  # as records.py
        else lam * (math.sqrt(128 / (50000 * epochs)) if normalized else 1),
        "weight_decay_norm": lam if normalized else math.nan, "normalized": normalized,
        "schedule": "cosine", "epochs": epochs, "batch_size": 128, "n_train": 50000, "seed": 0,
        "epoch": epoch, "step": 391 * epoch, "lr_multiplier": 1.0,
        "train_loss": 2.0 * np.exp(-0.5 * epoch) if n else np.nan, "train_error": err,
        "test_loss": 2 * err, "test_error": err, "test_error_top5": err / 3, "param_norm": 30.0,
        "elapsed_s": 10.0 * epoch, "num_classes": 10, "git_sha": "0123abc",
        "harness_version": "0.1.0", "torch_version": "2.4.1", "device": "cuda:0 (H100)",
    }).to_parquet(runs / f"{run_id}.parquet")


def planted(lr: float, lam: float, slope: float, k0: float) -> float:
    """Final error with best lambda at log2 lam* = k0 + slope*log2 lr, best lr 2^-6."""
    la, lm = math.log2(lr), math.log2(lam)
    return 0.05 + 0.01 * (lm - (k0 + slope * la)) ** 2 + 0.005 * (la + 6) ** 2


@pytest.fixture
def study(tmp_path: Path) -> Path:
    runs = tmp_path / "results" / "fig2_mini" / "runs"
    runs.mkdir(parents=True)
    for optimizer, decay, slope, k0 in [("sgd", "l2", -1.0, -13.0),
                                        ("adam", "decoupled", 0.0, -7.0)]:
        for lr in [2 * g for g in GRID]:
            for lam in GRID:
                status = "diverged" if (lr, lam) == (GRID[-1] * 2, GRID[-1]) else "completed"
                status = "failed" if (decay, lr, lam) == ("l2", GRID[0] * 2, GRID[-1]) \
                    else status
                write_run(runs, optimizer=optimizer, decay=decay, lr=lr, lam=lam,
                          final=planted(lr, lam, slope, k0), status=status)
    (runs / "corrupt.parquet").write_bytes(b"PAR1 this is not a parquet file")
    return runs.parent


def assert_real_png(path: Path) -> None:
    assert path.stat().st_size > 20_000
    image = imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_write_report(study: Path) -> None:
    path = report.write_report(study)
    assert path == study / "report" / "report.md"
    text = path.read_text()
    assert "## Best cell per panel" in text
    assert "| sgd / l2 | 2^-6 | 2^-7 | 5.00 |  | 1 | completed |" in text
    assert "| adam / decoupled | 2^-6 | 2^-7 | 5.00 |" in text
    assert "| sgd / l2 | -1.00 | 0.00 | 3 | coupled |" in text
    assert "| adam / decoupled | +0.00 |" in text and "separable |" in text
    assert "skipped file: corrupt.parquet" in text
    assert "failed cell: sgd / l2 α=2^-8 λ=2^-5: CUDA out of memory" in text
    assert "cells (grid points) | 50; runs 50: 47 completed, 2 diverged, 1 failed" in text
    assert "0123abc" in text and "cuda:0 (H100)" in text
    assert "![heatmaps](heatmaps.png)" in text
    for stem in ("heatmaps", "learning_curves"):
        assert_real_png(study / "report" / f"{stem}.png")
        assert (study / "report" / f"{stem}.pdf").stat().st_size > 5_000
    assert not (study / "report" / "transfer.png").exists()  # one epoch budget
    table = pd.read_csv(study / "report" / "cells.csv")
    assert len(table) == 50 and table["failed"].sum() == 1 and table["diverged"].sum() == 2


def test_budgets_study_has_transfer_plot(tmp_path: Path) -> None:
    runs = tmp_path / "budgets" / "runs"
    runs.mkdir(parents=True)
    for epochs in (2, 4):
        for lam in GRID:
            write_run(runs, optimizer="adam", decay="decoupled", lr=0.001, lam=lam,
                      final=planted(2.0**-6, lam, 0.0, -7.0), epochs=epochs, normalized=True)
    text = report.write_report(tmp_path / "budgets", tmp_path / "out").read_text()
    assert_real_png(tmp_path / "out" / "transfer.png")
    assert "best lambda_norm 2^-7 @ 2 ep, 2^-7 @ 4 ep (spread 0.0 octaves)" in text
    assert "normalized weight decay λ_norm grid" in text


def test_cli(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = study.parent
    assert report.main(["nope", "--results-dir", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown study 'nope'" in err and "fig2_mini" in err
    assert report.main(["fig2_mini", "--results-dir", str(results)]) == 0
    assert Path(capsys.readouterr().out.strip()) == study / "report" / "report.md"
