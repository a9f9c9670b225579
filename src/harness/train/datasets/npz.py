"""Datasets stored as .npz: a user's own file (`npz`) and downsampled ImageNet (`imagenet32`).

Both are read with `np.load(allow_pickle=False)`, so a file can hold arrays and nothing else.

- `npz`: keys x_train, y_train, x_test, y_test; x uint8 as N x H x W x C or N x H x W (one
  channel), any size and channel count; y integers in 0..K-1, K = max label + 1, at most
  twice the number of classes that occur. Only these four arrays are read.
- `imagenet32`: the official batches of Chrabaszcz et al. (2017), train_data_batch_1..10.npz and
  val_data.npz; key 'data' is N x 3*S*S uint8, channel-major per row (S = 32 for imagenet32), key
  'labels' holds 1..1000 (shifted to 0..999 here). Registration at image-net.org is needed, so
  there is no download.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from harness.spec.dataset import DATASETS
from harness.train.datasets import RawData, Source, find_dir, labels_int64

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IMAGENET_FOLDER = "imagenet32"
IMAGENET_TRAIN = tuple(f"train_data_batch_{i}.npz" for i in range(1, 11))
IMAGENET_VAL = "val_data.npz"
IMAGENET_HOW_TO_GET = DATASETS["imagenet32"].how_to_get


def _open(path: Path, keys: Iterable[str]) -> dict[str, np.ndarray]:
    """The arrays `keys` of an .npz (no pickles; other arrays are never read); ValueError
    naming the file if it is not an .npz of plain arrays or lacks one of them."""
    keys = list(keys)
    try:
        with np.load(path, allow_pickle=False) as f:
            names = list(f.files)
            arrays = {k: f[k] for k in keys if k in names}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path} is not a readable .npz of plain arrays ({e})") from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}; needs {keys}, has {sorted(names)}")
    return arrays


def _images_nchw(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise ValueError(
            f"{path}: {key} must be uint8 N x H x W x C or N x H x W, got {x.dtype} {x.shape}"
        )
    x = x[..., None] if x.ndim == 3 else x
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def load_npz(path: str | Path | None) -> RawData:
    """A user .npz (see module docstring); every format problem is one clear ValueError."""
    if path is None:
        raise ValueError("dataset npz needs a path: set dataset.path=/path/to/file.npz")
    path = Path(path)
    arrays = _open(path, NPZ_KEYS)
    x_train = _images_nchw(arrays["x_train"], "x_train", path)
    x_test = _images_nchw(arrays["x_test"], "x_test", path)
    y_train = labels_int64(arrays["y_train"], f"{path}: y_train", len(x_train))
    y_test = labels_int64(arrays["y_test"], f"{path}: y_test", len(x_test))
    if len(y_train) == 0 or len(y_test) == 0:
        raise ValueError(f"{path}: train and test splits must be non-empty")
    if min(y_train.min(), y_test.min()) < 0:
        raise ValueError(f"{path}: labels must be 0..K-1, found {min(y_train.min(), y_test.min())}")
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    present = len(np.union1d(np.unique(y_train), np.unique(y_test)))
    if num_classes > 2 * present:
        raise ValueError(f"{path}: labels reach {num_classes - 1} but only {present} distinct "
                         f"classes occur; relabel them as 0..{present - 1}")
    return RawData("npz", x_train, y_train, x_test, y_test, num_classes,
                   source=str(path.resolve()))


def _imagenet_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    arrays = _open(path, ("data", "labels"))
    data = arrays["data"]
    side = int(round((data.shape[-1] / 3) ** 0.5)) if data.ndim == 2 else 0
    if data.dtype != np.uint8 or data.ndim != 2 or 3 * side * side != data.shape[1]:
        raise ValueError(f"{path}: 'data' must be uint8 N x 3*S*S, got {data.dtype} {data.shape}")
    labels = labels_int64(arrays["labels"], str(path), len(data)) - 1
    if len(labels) and (labels.min() < 0 or labels.max() >= 1000):
        raise ValueError(f"{path}: 'labels' must be in 1..1000")
    return data.reshape(-1, 3, side, side), labels


def load_imagenet(dirs: Iterable[Path]) -> RawData:
    """Downsampled ImageNet from the first of `dirs` (each as is and with /imagenet32)."""
    dirs = list(dirs)
    candidates = [c for d in dirs for c in (d / IMAGENET_FOLDER, d)]
    found = find_dir(candidates, [*IMAGENET_TRAIN, IMAGENET_VAL], "imagenet32")
    if found is None:
        where = ", ".join(str(d) for d in candidates)
        raise FileNotFoundError(f"imagenet32 batches not found in {where}; {IMAGENET_HOW_TO_GET}")
    train = [_imagenet_batch(found / f) for f in IMAGENET_TRAIN]
    x_test, y_test = _imagenet_batch(found / IMAGENET_VAL)
    return RawData(
        name="imagenet32",
        x_train=np.concatenate([x for x, _ in train]),
        y_train=np.concatenate([y for _, y in train]),
        x_test=np.ascontiguousarray(x_test),
        y_test=y_test,
        num_classes=1000,
        source=str(found.resolve()),
    )


def read(source: Source) -> RawData:
    """A user's .npz: dataset.path."""
    return load_npz(source.path)


def read_imagenet(source: Source) -> RawData:
    return load_imagenet(source.dirs)
