"""CIFAR-10 from the official python batches (`cifar-10-batches-py/`), read without trusting pickle.

The batches are Python pickles (protocol 2): a dict with bytes keys b'data' (uint8 numpy array,
10000 x 3072, channel-major RRR..GGG..BBB per row), b'labels' (list of 10000 ints in 0..9),
b'batch_label' and b'filenames'. They are read with `_CifarUnpickler`, which resolves only the
globals a numpy array needs; any other global (os.system, builtins.eval, ...) is refused before
anything runs. `fetch` downloads the official archive and checks its md5 and each batch's md5.
"""

from __future__ import annotations

import codecs
import pickle
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from harness.spec.dataset import DATASETS
from harness.train.datasets import RawData, Source, find_dir, labels_int64

FOLDER = "cifar-10-batches-py"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
TRAIN = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
}
TEST = {"test_batch": "40351d587109b95175f43aff81a1287e"}
HOW_TO_GET = DATASETS["cifar10"].how_to_get


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as Python 3 writes bytes into protocol-2 pickles, latin-1 only."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's array-rebuild function
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy < 2 and the official files
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy >= 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,  # bytes pickled by Python 3 at protocol 2
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy-array globals in `_ALLOWED`."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name}: a CIFAR batch holds only numpy arrays"
            ) from None


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (images uint8 N x 3 x 32 x 32, labels int64 N); ValueError if bad."""
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except Exception as e:  # safe: only _ALLOWED globals can run while loading
        raise ValueError(f"corrupt CIFAR-10 batch {path} ({e}); {HOW_TO_GET}") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"corrupt CIFAR-10 batch {path} (no b'data'/b'labels'); {HOW_TO_GET}")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"corrupt CIFAR-10 batch {path} (b'data' is not uint8 N x 3072)")
    labels = labels_int64(batch[b"labels"], f"CIFAR-10 batch {path}", len(data))
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32)), labels


def load(dirs: Iterable[Path]) -> RawData:
    """CIFAR-10 from the first of `dirs` (each tried as is and with /cifar-10-batches-py)."""
    dirs = list(dirs)
    candidates = [c for d in dirs for c in (d / FOLDER, d)]
    found = find_dir(candidates, [*TRAIN, *TEST], "CIFAR-10")
    if found is None:
        where = ", ".join(str(d / FOLDER) for d in dirs)
        raise FileNotFoundError(f"CIFAR-10 not found in {where}; {HOW_TO_GET}")
    train = [read_batch(found / f) for f in TRAIN]
    x_test, y_test = read_batch(found / "test_batch")
    return RawData(
        name="cifar10",
        x_train=np.concatenate([x for x, _ in train]),
        y_train=np.concatenate([y for _, y in train]),
        x_test=x_test,
        y_test=y_test,
        num_classes=10,
        source=str(found.resolve()),
    )


def read(source: Source) -> RawData:
    return load(source.dirs)


def fetch(root: Path) -> Path:
    """Download and extract the official archive into root (skipped if the batches verify)."""
    from torchvision.datasets.utils import check_integrity, download_and_extract_archive

    folder = root / FOLDER
    files = {**TRAIN, **TEST}
    if not all(check_integrity(str(folder / f), md5) for f, md5 in files.items()):
        download_and_extract_archive(URL, str(root), md5=ARCHIVE_MD5)
    bad = [f for f, md5 in files.items() if not check_integrity(str(folder / f), md5)]
    if bad:
        raise ValueError(f"CIFAR-10 files {bad} in {folder} fail their md5 after download")
    return folder
