"""npz datasets: only the four needed arrays are read; a label count far above the classes
present is an error, not a silently huge classifier; images no model can take (smaller than
MIN_IMAGE_SIZE, no channel) are refused by the data check before any cell, in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.train import data
from harness.train.data import load_dataset
from harness.train.models import MIN_IMAGE_SIZE
from tests.conftest import TINY, harness_cli


def arrays(y_train=(0, 1, 1), y_test=(0, 1, 0)) -> dict:
    x = np.zeros((3, 4, 4), np.uint8)
    return {"x_train": x, "y_train": np.array(y_train), "x_test": x, "y_test": np.array(y_test)}


def test_an_extra_array_is_never_read(tmp_path):
    path = tmp_path / "extra.npz"
    # an object array can only be read by unpickling: reading it would raise
    np.savez(path, **arrays(), notes=np.array([{"a": 1}], dtype=object))
    ds = load_dataset("npz", path=str(path))
    assert (ds.n_train, ds.n_test, ds.num_classes) == (3, 3, 2)


def test_labels_far_above_the_classes_present_are_one_clear_error(tmp_path):
    path = tmp_path / "sparse.npz"
    np.savez(path, **arrays(y_train=(0, 999, 999), y_test=(0, 0, 999)))
    with pytest.raises(ValueError, match=r"labels reach 999 but only 2 distinct classes "
                                         r"occur; relabel them as 0\.\.1") as err:
        load_dataset("npz", path=str(path))
    assert "\n" not in str(err.value)
    np.savez(path, **arrays(y_train=(0, 3, 3), y_test=(0, 0, 3)))  # 4 labels, 2 present: kept
    assert load_dataset("npz", path=str(path)).num_classes == 4


def images(path: Path, shape: tuple[int, ...], n: int = 64) -> str:
    """An .npz of n training and n // 4 test images of `shape` (H x W or H x W x C), 10 classes."""
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n, *shape), dtype=np.uint8),
             y_train=np.arange(n) % 10, x_test=rng.integers(0, 256, (n // 4, *shape),
                                                             dtype=np.uint8),
             y_test=np.arange(n // 4) % 10)
    return str(path)


UNTAKEABLE = {(4, 4): "1 x 4 x 4", (1, 1): "1 x 1 x 1", (8, 8, 0): "0 x 8 x 8",
              (8, 3, 3): "3 x 8 x 3", (0, 0): "1 x 0 x 0"}


@pytest.mark.parametrize("shape", list(UNTAKEABLE))
def test_the_data_check_refuses_images_no_model_takes(tmp_path, shape):
    path = images(tmp_path / "x.npz", shape)
    with pytest.raises(data.DataError) as err:
        data.check("npz", path=path)
    text = str(err.value)
    assert "\n" not in text and f"C x H x W = {UNTAKEABLE[shape]}" in text
    assert f"H, W >= {MIN_IMAGE_SIZE} pixels and C >= 1 channel" in text and path in text
    assert data.check("npz", path=images(tmp_path / "ok.npz", (8, 8, 3))) == 64  # the smallest


@pytest.mark.parametrize("shape", [(4, 4), (8, 8, 0)])
def test_harness_run_on_untakeable_images_is_one_line_and_no_cell(tmp_path, shape):
    """What once failed per cell with a traceback and a failed parquet: refused before any."""
    path = images(tmp_path / "x.npz", shape)
    run = ["run", *(o for o in TINY if not o.startswith("dataset")), "dataset=npz",
           f"dataset.path={path}", "train.batch_size=16", "study=untakeable"]
    proc = harness_cli(run, tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("harness run: error: dataset.path=")
    assert proc.stderr.count("\n") == 1 and f"C x H x W = {UNTAKEABLE[shape]}" in proc.stderr
    assert not list(tmp_path.rglob("*.parquet"))
