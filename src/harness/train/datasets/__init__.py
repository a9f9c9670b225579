"""Format readers behind `harness.train.data.load_dataset`: each returns a `RawData` of numpy
arrays.

A reader is `read(source) -> RawData` (`Source`: the directories to search, dataset.path, the
sizes asked for), and `fetch(root) -> folder` where the dataset can be downloaded; the table
from dataset name to its `Reader` is `harness.train.data.READERS`, what each dataset is
(sizes, how to get it) its `harness.spec.dataset.DatasetSpec`.
Contract of every reader: images uint8 in N x C x H x W (channel-major, C-contiguous), labels
int64 in 0..num_classes-1. Readers never touch torch or a device; `harness.train.data` does
that once.
Bad or missing files raise `ValueError` / `FileNotFoundError` with one line saying how to fix it;
a directory holding only some of a dataset's files is such an error naming the missing ones,
never passed over for a later directory (`find_dir`). A reader sets `RawData.source`, where it
read the arrays (the folder or the file; None: generated).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True, eq=False)
class RawData:
    """One dataset's four arrays on the host, already in the harness layout (checked on build)."""

    name: str
    x_train: np.ndarray  # uint8, N x C x H x W
    y_train: np.ndarray  # int64, N
    x_test: np.ndarray  # uint8, M x C x H x W (same C, H, W as train)
    y_test: np.ndarray  # int64, M
    num_classes: int
    source: str | None = None  # the absolute folder or file read (None: generated)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype != np.uint8 or x.ndim != 4:
                raise ValueError(
                    f"{self.name}: x_{split} must be uint8 N x C x H x W, "
                    f"got {x.dtype} with shape {x.shape}"
                )
            if y.dtype != np.int64 or y.shape != (len(x),):
                raise ValueError(
                    f"{self.name}: y_{split} must be int64 of length {len(x)}, "
                    f"got {y.dtype} with shape {y.shape}"
                )
            if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(
                    f"{self.name}: y_{split} has labels in [{y.min()}, {y.max()}], "
                    f"valid are 0..{self.num_classes - 1}"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"{self.name}: train images are {self.x_train.shape[1:]} but test images are "
                f"{self.x_test.shape[1:]} (C, H, W must match)"
            )


@dataclass(frozen=True)
class Source:
    """What a reader is given: the directories to search, in order (spec source "dirs"), the
    file dataset.path (source "path"), and the (train, test) sizes asked for: train_subset,
    test_subset, the sizes a generated dataset makes (None: its default)."""

    dirs: list[Path]
    path: str | None
    sizes: tuple[int | None, int | None]


@dataclass(frozen=True)
class Reader:
    """A dataset's reader, and its download into a root (returns the folder) when it has one."""

    read: Callable[[Source], RawData]
    fetch: Callable[[Path], Path] | None = None


class Incomplete(FileNotFoundError):
    """A directory searched holds some of a dataset's files but not all (one line)."""


def incomplete(what: str, folder: Path, missing: Iterable[str]) -> Incomplete:
    return Incomplete(f"{what} in {folder} is incomplete: missing {', '.join(missing)}; "
                      f"complete the folder, or remove it, or point dataset.root at one "
                      f"holding every file (it is not looked for elsewhere)")


def find_dir(dirs: Iterable[Path], required: Sequence[str], what: str = "the dataset"
             ) -> Path | None:
    """The first directory in `dirs` that holds any file in `required`, if it holds every
    one; None if none holds any. A directory holding only some of them raises `Incomplete`
    naming the missing ones: an incomplete dataset.root is never silently passed over for a
    copy further down the search path."""
    for d in dirs:
        present = [(d / f).is_file() for f in required]
        if all(present):
            return d
        if any(present):
            raise incomplete(what, d, [f for f, ok in zip(required, present, strict=True)
                                       if not ok])
    return None


def labels_int64(labels: object, name: str, n: int) -> np.ndarray:
    """Labels (list or array of integers, length n) as int64; ValueError if not integers."""
    y = np.asarray(labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name}: expected {n} integer labels, got {y.dtype} with shape {y.shape}")
    return y.astype(np.int64)
