"""The demo study end to end (shrunk): the sweep on real Fashion-MNIST, then its report."""

from __future__ import annotations

import matplotlib.image
import pandas as pd
import pytest

from tests.conftest import fashion_mnist_root, harness_cli


@pytest.mark.slow
def test_demo_sweep_and_report_on_real_data(tmp_path):
    root = fashion_mnist_root()
    sweep = harness_cli(["run", "-m", "+experiment=demo", "panel=sgd_l2,adam_decoupled",
                         f"dataset.root={root}", "dataset.train_subset=512",
                         "dataset.test_subset=256", "train.epochs=1", "logger.progress=none"],
                        tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    assert "50 cells: 50 completed" in sweep.stdout
    report = harness_cli(["report", "demo"], tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    out = tmp_path / "results" / "demo" / "report"
    cells = pd.read_csv(out / "cells.csv")
    assert len(cells) == 50 and set(cells["panel"]) == {"sgd / l2", "adam / decoupled"}
    assert cells["test_error"].between(0, 1).all() and cells["test_error"].min() < 0.75
    text = (out / "report.md").read_text()
    for needed in ("heatmaps.png", "learning_curves.png", "Separability", "SGD+L2",
                   "AdamW", "Fashion"):  # the report's method names (analysis.names)
        assert needed.lower() in text.lower(), needed
    image = matplotlib.image.imread(out / "heatmaps.png")
    assert image.shape[0] > 300 and image.shape[1] > 500 and image.std() > 0.05
