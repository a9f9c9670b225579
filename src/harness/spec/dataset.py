"""The datasets: what each is, known without reading a file, free of torch; the subset and
val_split checks.

`DATASETS` holds one `DatasetSpec` per dataset: its sizes, where its files come from, how a
user gets them. Config validation reads it (the name, a plan's images to train, a batch larger
than the training set) and so does `harness.train.data`, whose only table per dataset maps a
name to its reader (format readers in `harness.train.datasets`, numpy only).

Adding a dataset is its spec (a line in DATASETS, or `register(DatasetSpec(...))` at run time),
its reader (`harness.train.data.register(name, read)`, a module of `harness.train.datasets`)
and its YAML, `configs/dataset/<name>.yaml` (or a --config-dir's `dataset/<name>.yaml`).
`split` checks dataset.train_subset, test_subset and val_split, once for a config and again
against the sizes read from the files; `images` checks the image shape read from the files
against what every model takes (MIN_IMAGE_SIZE, MIN_CHANNELS: their one home;
harness.train.models.build_model enforces the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.spec.values import Number, SpecError, one_of

SOURCES = ("dirs", "path", "generated")
MIN_IMAGE_SIZE = 8  # pixels a side: three stride-2 reductions (PreAct ResNet-18) leave >= 1
MIN_CHANNELS = 1


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    sizes: tuple[int, int] | None  # (training, test) images of the full set; None: once read
    source: str                    # dirs: files searched in dataset.root, $HARNESS_DATA, ./data
                                   # and system_dirs; path: the file dataset.path;
                                   # generated: made by its reader, the subsets are its sizes
    how_to_get: str | None         # what to do when the files are not there (None: generated)
    fetchable: bool                # `harness data fetch NAME` and dataset.download get it
    system_dirs: tuple[str, ...]   # searched last (a distribution's package installs there)
    apt: str | None                # the Debian package that installs it into system_dirs

    def __post_init__(self) -> None:
        one_of(f"dataset {self.name!r}: source", self.source, SOURCES)


def _fetch_hint(name: str, apt: str | None = None) -> str:
    fetch = f"get it with `python -m harness data fetch {name} --root DIR` (then dataset.root=DIR)"
    if apt:
        return f"{fetch}, set dataset.download=true, or `apt install {apt}`"
    return f"{fetch} or set dataset.download=true"


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("cifar10", sizes=(50_000, 10_000), source="dirs",
                how_to_get=_fetch_hint("cifar10"), fetchable=True, system_dirs=(), apt=None),
    DatasetSpec("fashion_mnist", sizes=(60_000, 10_000), source="dirs",
                how_to_get=_fetch_hint("fashion_mnist", "dataset-fashion-mnist"),
                fetchable=True, system_dirs=("/usr/share/datasets/fashion-mnist",),
                apt="dataset-fashion-mnist"),
    DatasetSpec("imagenet32", sizes=(1_281_167, 50_000), source="dirs",
                how_to_get="download Imagenet32_train_npz.zip and Imagenet32_val_npz.zip from "
                           "https://image-net.org/download-images (registration required), "
                           "unzip into DIR and set dataset.root=DIR",
                fetchable=False, system_dirs=(), apt=None),
    DatasetSpec("synthetic", sizes=(5000, 1000), source="generated", how_to_get=None,
                fetchable=False, system_dirs=(), apt=None),  # the default sizes
    DatasetSpec("npz", sizes=None, source="path",
                how_to_get="give the .npz holding x_train, y_train, x_test, y_test (an "
                           "absolute path, no ~)",
                fetchable=False, system_dirs=(), apt=None),
)}


def get(name: Any) -> DatasetSpec:
    """The spec of dataset `name`; a SpecError naming the valid ones if there is none."""
    return DATASETS[one_of("dataset", name, DATASETS)]


def register(spec: DatasetSpec) -> DatasetSpec:
    """Make `spec` the dataset `spec.name` (a second, different spec of that name is an error)."""
    if DATASETS.get(spec.name, spec) != spec:
        raise SpecError(f"dataset {spec.name!r} is registered twice; choose another name")
    DATASETS[spec.name] = spec
    return spec


_SUBSET = Number(low=1, integer=True)
_VAL_SPLIT = Number(high=1, hint="give a fraction in [0, 1), e.g. {key}=0.1")


def split(name: str, train_subset: Any, test_subset: Any, val_split: Any,
          sizes: tuple[int, int] | None = None) -> tuple[int | None, int | None, float]:
    """(train_subset, test_subset, val_split) normalized: each subset None or an integer >= 1,
    val_split a fraction in [0, 1). With `sizes`, the (training, test) images read from the
    files, also each subset at most its split's size (not for a generated dataset, whose
    subsets are its sizes) and a val_split that holds out at least one image and leaves one.
    Otherwise a SpecError (one line)."""
    subsets = [None if n is None else int(_SUBSET.check(f"dataset.{key}", n))
               for key, n in (("train_subset", train_subset), ("test_subset", test_subset))]
    fraction = float(_VAL_SPLIT.check("dataset.val_split", val_split))
    if sizes is not None:
        if get(name).source != "generated":
            for key, n, size in zip(("train_subset", "test_subset"), subsets, sizes,
                                    strict=True):
                if n is not None and n > size:
                    raise SpecError(f"dataset.{key}={n} is out of range; valid: 1..{size}")
        n = subsets[0] or sizes[0]
        n_val = held_out(fraction, n)
        if fraction and not 1 <= n_val < n:
            raise SpecError(f"dataset.val_split={fraction} holds out {n_val} of {n} training "
                            "images; valid: a fraction that leaves at least one image on each "
                            "side")
    return subsets[0], subsets[1], fraction


def images(name: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The (C, H, W) of dataset `name`'s images, checked to be what every model takes: H and W
    at least MIN_IMAGE_SIZE, C at least MIN_CHANNELS; otherwise a SpecError (one line)."""
    c, h, w = (int(n) for n in shape)
    if min(h, w) < MIN_IMAGE_SIZE or c < MIN_CHANNELS:
        raise SpecError(f"dataset {name!r} has images of C x H x W = {c} x {h} x {w}; valid: "
                        f"H, W >= {MIN_IMAGE_SIZE} pixels and C >= {MIN_CHANNELS} channel, "
                        "what every model takes")
    return c, h, w


def held_out(val_split: float, n: int) -> int:
    """Images of n training images that val_split holds out for validation."""
    return round(val_split * n)


def train_images(name: str, train_subset: int | None, val_split: float,
                 sizes: tuple[int, int] | None = None) -> int | None:
    """Images a cell trains on: the subset (else the whole training set: `sizes` as read,
    else the spec's) less those val_split holds out; None when not known without reading."""
    n = train_subset or (sizes or get(name).sizes or (None, None))[0]
    return None if n is None else n - held_out(val_split, n)
