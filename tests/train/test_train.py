"""harness.train.loop through the run command: packed cells behave as if trained alone."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.cli.run import main
from tests.conftest import TINY

LOSSES = ["train_loss", "test_loss", "param_norm"]
ERRORS = ["train_error", "test_error"]


def assert_same_training(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """float32 grouped vs plain convs sum in another order (and more so with several threads):
    over 2 epochs losses agree to 2e-3 (measured: up to 5e-4 with 2 threads; the float64 tests
    in test_packed.py show the arithmetic itself is equal), while cells with other lr or lambda
    differ by far more (checked below); an image whose two top logits are that close may flip,
    so errors agree to 2 images of 256."""
    np.testing.assert_allclose(a[LOSSES], b[LOSSES], rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(a[ERRORS], b[ERRORS], atol=2 / 256 + 1e-9)
GRID = ["optimizer.lr=[0.01,0.003]", "decay.weight_decay=[0.3,3.0]"]  # alpha*lambda matters


def study(tmp_path, name, *overrides):
    assert main([*TINY, f"run.results_dir={tmp_path}", f"study={name}", *overrides]) in (0, 1)
    runs = [pd.read_parquet(p) for p in (tmp_path / name / "runs").glob("*.parquet")]
    return {(df["lr"].iloc[0], df["weight_decay"].iloc[0]): df for df in runs}


def test_four_packed_cells_match_four_solo_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    solo = study(tmp_path, "solo", *GRID, "decay=decoupled_lr", "train.pack=1")
    pack = study(tmp_path, "pack", *GRID, "decay=decoupled_lr", "train.pack=4")
    assert solo.keys() == pack.keys() and len(solo) == 4
    for cell, df in solo.items():
        assert (pack[cell]["status"] == "completed").all()
        assert_same_training(pack[cell], df)
    # the cells really differ, by far more than the tolerance: no copies of one cell
    finals = sorted(df["train_loss"].iloc[-1] for df in pack.values())
    assert min(b - a for a, b in zip(finals[:-1], finals[1:], strict=True)) > 1e-2, finals


def test_a_diverging_cell_in_a_pack_is_masked_and_the_others_match_solo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = ["optimizer=sgd", "decay=l2", "optimizer.lr=[0.01,10000.0]",
            "decay.weight_decay=0.0001", "train.epochs=3"]
    pack = study(tmp_path, "pack", *grid, "train.pack=2")
    solo = study(tmp_path, "solo", *grid[:2], "optimizer.lr=0.01", *grid[3:])
    [(good_cell, good)] = solo.items()
    assert (pack[good_cell]["status"] == "completed").all() and len(pack[good_cell]) == 3
    assert_same_training(pack[good_cell], good)
    [bad] = [df for cell, df in pack.items() if cell != good_cell]
    assert (bad["status"] == "diverged").all() and len(bad) < 3


def test_a_packs_images_per_s_counts_the_cells_that_trained_once_each():
    """An epoch's record gives images trained per second summed over the cells alive at its
    start, each once: a pack of 2 with one cell masked earlier counts 1 x the batch stream's
    rate, not 2 x (the dead cell trains nothing)."""
    import dataclasses

    import torch

    from harness.config import compose
    from harness.train import data as data_mod
    from harness.train import loop

    (cfg,) = compose.cells([*TINY, "train.eval_every=1000"])
    cells = [dataclasses.replace(cfg, optimizer=dataclasses.replace(cfg.optimizer, lr=lr))
             for lr in (0.01, 0.02)]
    device = torch.device("cpu")
    ds = data_mod.load_dataset("synthetic", train_subset=128, test_subset=64, device=device)
    run = loop.setup(cells, ds, device)
    zeros = torch.zeros(2, dtype=torch.float64)
    both = loop._epoch_records(run, 0, [True, True], [0.0, 0.0], zeros, zeros, 100.0)
    assert [e.metrics.images_per_s for e in both] == [200.0, 200.0]
    one = loop._epoch_records(run, 0, [False, True], [0.0, 0.0], zeros, zeros, 100.0)
    assert one[0] is None and one[1].metrics.images_per_s == 100.0
