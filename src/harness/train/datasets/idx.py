"""Fashion-MNIST from its four IDX files (gzip-compressed as distributed, or uncompressed).

IDX layout (big-endian): a uint32 magic 0x00000803 (uint8 images, 3 dims) or 0x00000801 (uint8
labels, 1 dim), then one uint32 per dim (N, 28, 28 or N), then the raw uint8 values. Files are
looked for in the given directories (each as is and with /fashion-mnist); `fetch` downloads the
Zalando originals and checks their md5.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from harness.spec.dataset import DATASETS
from harness.train.datasets import RawData, Source, incomplete

FOLDER = "fashion-mnist"
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = {  # name -> md5 of the .gz as Zalando serves it (Debian's recompressed copies differ)
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
MAGIC = {3: 0x00000803, 1: 0x00000801}  # number of dims -> magic for uint8 data
HOW_TO_GET = DATASETS["fashion_mnist"].how_to_get


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """One IDX file of uint8 values with `ndim` dims (gzip or plain); ValueError if malformed."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"corrupt IDX file {path} ({e}); {HOW_TO_GET}") from None
    header = 4 * (1 + ndim)
    if len(raw) < header or int.from_bytes(raw[:4], "big") != MAGIC[ndim]:
        raise ValueError(
            f"{path} is not a uint8 IDX file with {ndim} dims "
            f"(expected magic {MAGIC[ndim]:#010x}); {HOW_TO_GET}"
        )
    shape = tuple(int.from_bytes(raw[4 * i : 4 * i + 4], "big") for i in range(1, ndim + 1))
    if len(raw) - header != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _path(d: Path, name: str) -> Path | None:
    for candidate in (d / f"{name}.gz", d / name):
        if candidate.is_file():
            return candidate
    return None


def locate(dirs: Iterable[Path]) -> dict[str, Path]:
    """Paths of the four files (each .gz or plain) from the first directory holding any of
    them; one holding only some is an error naming the missing (never passed over)."""
    dirs = list(dirs)
    for candidate in (c for d in dirs for c in (d, d / FOLDER)):
        paths = {name: _path(candidate, name) for name in FILES}
        if all(paths.values()):
            return paths  # type: ignore[return-value]
        if any(paths.values()):
            raise incomplete("Fashion-MNIST", candidate,
                             [f"{name}[.gz]" for name, p in paths.items() if p is None])
    where = ", ".join(str(d) for d in dirs)
    raise FileNotFoundError(f"Fashion-MNIST (4 IDX .gz files) not found in {where}; {HOW_TO_GET}")


def _split(paths: dict[str, Path], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(paths[f"{prefix}-images-idx3-ubyte"], 3)
    y = read_idx(paths[f"{prefix}-labels-idx1-ubyte"], 1)
    if len(x) != len(y):
        raise ValueError(f"Fashion-MNIST {prefix}: {len(x)} images but {len(y)} labels")
    return np.ascontiguousarray(x[:, None]), y.astype(np.int64)


def load(dirs: Iterable[Path]) -> RawData:
    """Fashion-MNIST (60000 train / 10000 test, 1 x 28 x 28, 10 classes)."""
    paths = locate(dirs)
    x_train, y_train = _split(paths, "train")
    x_test, y_test = _split(paths, "t10k")
    return RawData("fashion_mnist", x_train, y_train, x_test, y_test, num_classes=10,
                   source=str(paths["train-images-idx3-ubyte"].parent.resolve()))


def read(source: Source) -> RawData:
    return load(source.dirs)


def fetch(root: Path) -> Path:
    """Download the four .gz files into root/fashion-mnist (kept if their md5 already match)."""
    from torchvision.datasets.utils import check_integrity, download_url

    folder = root / FOLDER
    for name, md5 in FILES.items():
        if not check_integrity(str(folder / f"{name}.gz"), md5):
            download_url(URL + f"{name}.gz", str(folder), md5=md5)
    return folder
