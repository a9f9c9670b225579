"""npz datasets: only the four needed arrays are read; a label count far above the classes
present is an error, not a silently huge classifier."""

from __future__ import annotations

import numpy as np
import pytest

from harness.train.data import load_dataset


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
