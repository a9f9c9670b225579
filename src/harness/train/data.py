"""Datasets as uint8 tensors on the training device, with batch augmentation on that device.

`load_dataset` reads a dataset once (format readers live in `harness.train.datasets`),
optionally takes a subset, computes per-channel statistics on the training images and moves
everything to `device`. Batches are then cut, augmented and normalized there, with no host
round trip:

    augment:    x <- hflip_b(crop_{dy,dx}(zero_pad_p(x)))   dy, dx ~ U{0..2p}, b ~ Bernoulli(1/2),
                drawn independently per image (paper setup: p = 4, flip on)
    normalize:  x <- (x / 255 - mean_c) / std_c           mean, std of the training images in [0,1]

Data is looked for in `root`, else $HARNESS_DATA, else ./data (each as is and with the dataset's
folder name), then in the system directories: its spec's system_dirs (harness.spec.dataset:
e.g. Debian's dataset-fashion-mnist), or instead the directories in $HARNESS_SYSTEM_DATA
(os.pathsep-separated; empty: none), so a user or a test decides what the machine's copies
are. The first directory holding any of a dataset's files is the one read: holding only some
of them is an error naming the missing (never a silent fall back to a later copy).
`READERS` is the one table per dataset here: name -> its reader.
`load_dataset` records what a cell sees: `Dataset.fingerprint`, the sha256 of the arrays it
trains, validates and tests on (after subsetting), and `Dataset.source`, where they were read;
`identify` gives both without a device (harness.sweep.cells compares them with a finished
cell's record before skipping it).
`check` answers, once per command and before any cell starts, whether a dataset can be had:
found and readable, or downloaded now; otherwise a `DataError` of one line says how to get it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.spec import dataset as spec
from harness.train.datasets import RawData, Reader, Source, cifar, idx, npz, synthetic

READERS: dict[str, Reader] = {
    "cifar10": Reader(cifar.read, fetch=cifar.fetch),
    "fashion_mnist": Reader(idx.read, fetch=idx.fetch),
    "imagenet32": Reader(npz.read_imagenet),
    "synthetic": Reader(synthetic.read),
    "npz": Reader(npz.read),
}


def register(name: str, reader: Reader) -> Reader:
    """Make `reader` the reader of dataset `name` (its spec: harness.spec.dataset.register)."""
    if READERS.get(name, reader) != reader:
        raise ValueError(f"dataset {name!r} has a reader already; choose another name")
    READERS[name] = reader
    return reader


DATA_SEED = 0  # the subset and validation split of every cell: data is not a seed's
PAD = 4        # augmentation's crop padding (the paper's setup)

@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset; every tensor lives on the same device."""

    name: str
    x_train: torch.Tensor  # uint8, N x C x H x W
    y_train: torch.Tensor  # int64, N
    x_test: torch.Tensor  # uint8, M x C x H x W
    y_test: torch.Tensor  # int64, M
    num_classes: int
    mean: torch.Tensor  # float32, C: per-channel mean of x_train in [0, 1] units
    std: torch.Tensor  # float32, C: per-channel std of x_train in [0, 1] units (>= 1/255)
    x_val: torch.Tensor | None = None  # uint8: images held out of the training set (val_split)
    y_val: torch.Tensor | None = None
    fingerprint: str | None = None  # `fingerprint` of the arrays above, as on the host
    source: str | None = None       # the folder or file read (None: generated)

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    @property
    def n_test(self) -> int:
        return self.x_test.shape[0]

    @property
    def n_val(self) -> int:
        return 0 if self.x_val is None else self.x_val.shape[0]

    @property
    def in_channels(self) -> int:
        return self.x_train.shape[1]

    @property
    def image_size(self) -> int:
        return self.x_train.shape[2]

    @property
    def device(self) -> torch.device:
        return self.x_train.device


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where data is downloaded to: `root`, else $HARNESS_DATA, else ./data."""
    return Path(root if root is not None else os.environ.get("HARNESS_DATA", "data"))


SYSTEM_DATA = "HARNESS_SYSTEM_DATA"  # replaces every spec's system_dirs when set


def system_dirs(name: str) -> list[Path]:
    """The system directories searched last for dataset `name`: $HARNESS_SYSTEM_DATA when it is
    set (os.pathsep-separated, empty for none), else the spec's system_dirs."""
    if SYSTEM_DATA in os.environ:
        return [Path(p) for p in os.environ[SYSTEM_DATA].split(os.pathsep) if p]
    return [Path(p) for p in spec.get(name).system_dirs]


def search_dirs(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Directories searched for dataset `name`, in order (duplicates removed)."""
    dirs = [Path(root)] if root is not None else []
    if "HARNESS_DATA" in os.environ:
        dirs.append(Path(os.environ["HARNESS_DATA"]))
    dirs += [Path("data"), *system_dirs(name)]
    return list(dict.fromkeys(dirs))


class DataError(Exception):
    """A dataset is missing, unreadable or cannot be downloaded; the message is one line."""


def one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def download(name: str, root: str | None, timeout_s: float = 20.0) -> Path:
    """fetch(name, root), or one DataError line; a failed download leaves no new folder."""
    target = data_root(root)
    created = [p for p in (target, *target.parents) if not p.exists()]
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)  # no network: fail in seconds, not minutes
    try:
        return fetch(name, root)
    except Exception as err:  # noqa: BLE001 - urllib, torchvision and md5 errors alike
        for folder in created[-1:]:
            shutil.rmtree(folder, ignore_errors=True)
        apt = spec.get(name).apt
        raise DataError(f"{name} is not in {', '.join(map(str, search_dirs(name, root)))} and "
                        f"cannot be downloaded ({one_line(err)}); where there is internet run "
                        f"`python -m harness data fetch {name} --root DIR`, copy DIR here and "
                        f"set dataset.root=DIR (or HARNESS_DATA=DIR)"
                        f"{f' or `apt install {apt}`' if apt else ''}") from None
    finally:
        socket.setdefaulttimeout(old)


def fetch(name: str, root: str | os.PathLike | None = None) -> Path:
    """Download dataset `name` into `root` (see `data_root`), verify its md5, return its folder."""
    ds = spec.get(name)
    if ds.fetchable:
        return READERS[name].fetch(data_root(root))
    if ds.source == "dirs":
        raise ValueError(f"{name} cannot be fetched automatically: {ds.how_to_get}")
    fetchable = ", ".join(n for n, d in spec.DATASETS.items() if d.fetchable)
    raise ValueError(f"dataset {name!r} has nothing to fetch; valid: {fetchable}")


def _read(name: str, root: str | None, path: str | None, download: bool,
          sizes: tuple[int | None, int | None], get: Callable[[str, str | None], Path]
          ) -> RawData:
    """The dataset as its reader reads it; files not found are first downloaded by `get`
    (`fetch`, or `download` for one DataError line) when `download` and it can be fetched."""
    source = Source(search_dirs(name, root), path, sizes)
    try:
        return READERS[name].read(source)
    except FileNotFoundError:
        if not (download and spec.get(name).fetchable):
            raise
    get(name, root)
    return READERS[name].read(source)


def check(name: str, *, root: str | None = None, path: str | None = None,
          download: bool = False, train_subset: int | None = None,
          test_subset: int | None = None, val_split: float = 0.0,
          val_subset: int | None = None) -> int:
    """The number of training images a cell of dataset `name` trains on (less the validation
    images held out), once the dataset is known to be loadable (found and readable, or
    downloaded now when `download`) and its images ones every model takes; a missing, corrupt
    or undownloadable dataset, a subset or validation it cannot give (harness.spec.dataset.split)
    or images too small or without a channel (harness.spec.dataset.images) raises `DataError`
    with one line saying what to do."""
    try:
        ds = spec.get(name)
        if ds.source == "path" and (path is None or not Path(path).is_file()):
            raise DataError(f"dataset.path={path} is not a file; {ds.how_to_get}")
        if ds.source == "dirs" and root is not None and not Path(root).is_dir() \
                and not download:
            raise DataError(f"dataset.root={root} is not a directory; give the folder that "
                            f"holds {name}, or {ds.how_to_get}")
        sizes = ds.sizes if ds.source == "generated" else None  # its subsets: the sizes made
        if sizes is None:
            raw = _read(name, root, path, download, (None, None), _download)
            sizes = len(raw.x_train), len(raw.x_test)
            _check_images(name, path if ds.source == "path" else None, raw)
        split = spec.split(name, train_subset, test_subset, val_split, val_subset, sizes)
    except (ValueError, FileNotFoundError) as err:  # the readers' and the spec's one line
        raise DataError(one_line(err)) from None
    return spec.train_images(name, split, sizes)


_download = download  # check's `download` flag shadows the function


def _check_images(name: str, path: str | None, raw: RawData) -> None:
    """spec.images of the images read (train and test have one shape: RawData), naming
    dataset.path where they came from one (and, for npz, how its arrays are read)."""
    try:
        spec.images(name, raw.x_train.shape[1:])
    except ValueError as err:
        if path is None:
            raise
        layout = " (its arrays are read as N x H x W x C, or N x H x W for one channel)" \
            if READERS[name].read is npz.read else ""
        raise ValueError(f"dataset.path={path}: {err}{layout}") from None


def channel_stats(x: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std (ddof 0) of uint8 N x C x H x W, in [0, 1] units."""
    counts = np.zeros((x.shape[1], 256), dtype=np.int64)
    for start in range(0, len(x), chunk):
        for c in range(x.shape[1]):
            counts[c] += np.bincount(x[start:start + chunk, c].ravel(), minlength=256)
    values = np.arange(256) / 255.0
    total = counts.sum(axis=1)
    mean = counts @ values / total
    var = counts @ values**2 / total - mean**2
    std = np.maximum(np.sqrt(np.maximum(var, 0.0)), 1 / 255)  # a constant channel -> 0, not nan
    return mean.astype(np.float32), std.astype(np.float32)


@dataclass(frozen=True, eq=False)
class HostData:
    """A cell's arrays on the host, split as it trains on them (`host_data`)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    val: tuple[np.ndarray, ...]  # (x_val, y_val) or ()
    source: str | None

    @property
    def fingerprint(self) -> str:
        return fingerprint({"x_train": self.x_train, "y_train": self.y_train,
                            **dict(zip(("x_val", "y_val"), self.val, strict=False)),
                            "x_test": self.x_test, "y_test": self.y_test})


def fingerprint(arrays: dict[str, np.ndarray]) -> str:
    """"sha256:<hex>" of named arrays: each name, dtype, shape and C-order bytes, in order.
    Equal data gives equal fingerprints wherever it is read from; a changed label, pixel,
    image size or subset changes it."""
    h = hashlib.sha256()
    for key, a in arrays.items():
        h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
    return "sha256:" + h.hexdigest()


def host_data(name: str, *, root: str | None = None, path: str | None = None,
              download: bool = False, train_subset: int | None = None,
              test_subset: int | None = None, val_split: float = 0.0,
              val_subset: int | None = None) -> HostData:
    """The arrays a cell of dataset `name` sees, on the host (see `load_dataset`)."""
    spec.get(name)
    raw = _read(name, root, path, download, (train_subset, test_subset), fetch)
    split = spec.split(name, train_subset, test_subset, val_split, val_subset,
                       (len(raw.x_train), len(raw.x_test)))
    x_train, y_train = raw.x_train, raw.y_train
    val: tuple[np.ndarray, ...] = ()
    if split.val_subset is not None:
        (x_train, y_train), val = _outside(x_train, y_train, split.train_subset,
                                           split.val_subset)
    else:
        x_train, y_train = _subset(x_train, y_train, split.train_subset,
                                   np.random.default_rng(DATA_SEED))
        (x_train, y_train), val = _hold_out(x_train, y_train, split.val_split)
    x_test, y_test = _subset(raw.x_test, raw.y_test, split.test_subset, None)
    return HostData(raw.name, x_train, y_train, x_test, y_test, raw.num_classes, val,
                    raw.source)


def identify(name: str, **kw: object) -> tuple[str, str | None]:
    """(fingerprint, source) of what a cell of dataset `name` would see now; `kw` as for
    `host_data`. Reads the data, moves nothing to a device."""
    host = host_data(name, **kw)  # type: ignore[arg-type]
    return host.fingerprint, host.source


def load_dataset(name: str, *, root: str | None = None, path: str | None = None,
                 download: bool = False, train_subset: int | None = None,
                 test_subset: int | None = None, device: str | torch.device = "cpu",
                 val_split: float = 0.0, val_subset: int | None = None) -> Dataset:
    """Load dataset `name` onto `device` once.

    train_subset: a random subset of that many training examples (kept in file order);
    test_subset: the first that many test examples. For `synthetic` both are the generated
    sizes instead. mean/std are computed on the (subset) training images. `path` is the .npz
    for `npz`; `root` is explained in the module docstring; `download` fetches cifar10 and
    fashion_mnist when they are not found.
    val_split: the fraction of those training examples held out as a validation set, so
    hyperparameters can be chosen on it and scored on the test set; training, mean/std and
    B = n_train use only the rest.
    val_subset (instead of val_split): a validation set of that many of the other training
    images, drawn after the training subset, which it leaves as it is (without a
    train_subset, training is the rest). The subset and the held-out images are drawn from
    DATA_SEED: the same for every cell and every seed of a study (seeds vary the init and
    batch order). Subsets and validation the data cannot give raise harness.spec's SpecError
    (a ValueError). The Dataset's `fingerprint` and `source` say what was read, and where.
    """
    host = host_data(name, root=root, path=path, download=download,
                     train_subset=train_subset, test_subset=test_subset,
                     val_split=val_split, val_subset=val_subset)
    mean, std = channel_stats(host.x_train)

    def on_device(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.require(a, requirements="CW")).to(device)

    return Dataset(host.name, on_device(host.x_train), on_device(host.y_train),
                   on_device(host.x_test), on_device(host.y_test), host.num_classes,
                   on_device(mean), on_device(std), *(on_device(a) for a in host.val),
                   fingerprint=host.fingerprint, source=host.source)


def _subset(x: np.ndarray, y: np.ndarray, n: int | None, rng: np.random.Generator | None
            ) -> tuple[np.ndarray, np.ndarray]:
    """n examples (checked: spec.split): a seeded random choice (kept in order) if rng, else
    the first n."""
    if n is None or n == len(x):
        return x, y
    keep = np.sort(rng.choice(len(x), n, replace=False)) if rng is not None else np.arange(n)
    return x[keep], y[keep]


def _outside(x: np.ndarray, y: np.ndarray, n_train: int | None, n_val: int
             ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(train, val): the training subset as `_subset` draws it (all when n_train is None, less
    the validation images), and n_val of the other images, a seeded choice kept in order."""
    rng = np.random.default_rng(DATA_SEED)
    chosen = np.zeros(len(x), dtype=bool)
    if n_train is not None and n_train < len(x):
        chosen[rng.choice(len(x), n_train, replace=False)] = True  # as _subset draws it
    else:
        chosen[:] = True
    candidates = np.flatnonzero(~chosen) if n_train is not None else np.arange(len(x))
    val = np.sort(np.random.default_rng([DATA_SEED, 2]).choice(candidates, n_val,
                                                               replace=False))
    chosen[val] = False
    return (x[chosen], y[chosen]), (x[val], y[val])


def _hold_out(x: np.ndarray, y: np.ndarray, fraction: float
              ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, ...]]:
    """(train, val): spec.held_out(fraction, n) examples, a seeded choice kept in order, held
    out (checked: spec.split)."""
    if fraction == 0:
        return (x, y), ()
    held = np.zeros(len(x), dtype=bool)
    held[np.random.default_rng([DATA_SEED, 1]).choice(len(x), spec.held_out(fraction, len(x)),
                                                 replace=False)] = True
    return (x[~held], y[~held]), (x[held], y[held])


def _draw(n: int, generator: torch.Generator, pad: int, flip: bool) -> torch.Tensor:
    """(3, n) int64 on the generator's device: each image's crop offsets dy, dx ~ U{0..2 pad}
    and its flip bit (0 without flip), drawn as randint (2, n) then rand (n)."""
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator,
                            device=generator.device)
    flips = (torch.rand(n, generator=generator, device=generator.device) < 0.5) if flip else \
        torch.zeros(n, dtype=torch.bool, device=generator.device)
    return torch.cat([offsets, flips[None].long()])


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = PAD,
            flip: bool = True) -> torch.Tensor:
    """Per-image random crop of the zero-padded batch and random horizontal flip (see module).

    x: uint8 N x C x H x W on any device; the crops and flips are drawn on `generator`'s
    device (the CPU in training: the same for every device) and applied on x's. Two gathers,
    no loop over images. pad=0 and flip=False return an unchanged copy.
    """
    _check_augment(x, pad)
    if pad == 0 and not flip:
        return x.clone()
    return _apply(x, _draw(len(x), generator, pad, flip).to(x.device), pad)


def _check_augment(x: torch.Tensor, pad: int) -> None:
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"augment needs uint8 N x C x H x W, got {x.dtype} {tuple(x.shape)}")
    if pad < 0:
        raise ValueError(f"pad={pad} is invalid; valid: pad >= 0")


def _apply(x: torch.Tensor, drawn: torch.Tensor, pad: int) -> torch.Tensor:
    """Crop and flip each image of x as `_draw` drew them (on x's device)."""
    n, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    dy, dx, flipped = drawn
    rows = dy[:, None] + torch.arange(h, device=dev)  # N x H, rows of padded
    cols = dx[:, None] + torch.arange(w, device=dev)  # N x W, columns of padded
    cols = torch.where(flipped.bool()[:, None], cols.flip(1), cols)
    # two gathers with broadcast (stride-0) indices: rows, then columns; no index copy per pixel
    x = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * pad))
    return x.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """float32 (x / 255 - mean_c) / std_c for a uint8 N x C x H x W batch."""
    return (x.float().div_(255) - mean[:, None, None]).div_(std[:, None, None])


def train_batches(ds: Dataset, batch_size: int, generator: torch.Generator,
                  augment: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch in the order of a random permutation drawn from `generator`, a CPU generator
    whatever ds's device: a GPU run sees the batch order and augmentation a CPU run of the same
    seed sees (draws: randperm(n), then per batch randint (2, b) and rand (b), in that order).
    The epoch's draws are made at its start and reach the device in one copy, so no host data
    enters a step.

    Yields normalized float32 x and int64 y; the last, partial batch is kept.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is invalid; valid: >= 1")
    if torch.device(generator.device).type != "cpu":
        raise ValueError(f"generator is on {generator.device}; the batch order and augmentation "
                         "are drawn on the CPU for every device: create it with "
                         "torch.Generator()")
    order = torch.randperm(ds.n_train, generator=generator)
    starts = range(0, ds.n_train, batch_size)
    drawn = torch.cat([_draw(min(batch_size, ds.n_train - s), generator, PAD, True)
                       for s in starts], dim=1) if augment else None
    order = order.to(ds.device, non_blocking=True)
    drawn = None if drawn is None else drawn.to(ds.device, non_blocking=True)
    for start in starts:
        index = order[start:start + batch_size]
        x = ds.x_train[index]
        if drawn is not None:
            x = _apply(x, drawn[:, start:start + batch_size], PAD)
        yield normalize(x, ds.mean, ds.std), ds.y_train[index]




def test_batches(ds: Dataset, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The test set in order, normalized, not augmented; the last batch may be partial."""
    return _in_order(ds, ds.x_test, ds.y_test, batch_size)


def val_batches(ds: Dataset, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The held-out validation images (val_split), as `test_batches`; none without a split."""
    return _in_order(ds, ds.x_val, ds.y_val, batch_size)


def _in_order(ds: Dataset, x: torch.Tensor | None, y: torch.Tensor | None,
              batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is invalid; valid: >= 1")
    for start in range(0, 0 if x is None else len(x), batch_size):
        yield normalize(x[start:start + batch_size], ds.mean, ds.std), y[start:start + batch_size]
