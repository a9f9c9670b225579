"""The datasets: what each is, known without reading a file, free of torch; the subset and
val_split checks.

`DATASETS` holds one `DatasetSpec` per dataset: its sizes, where its files come from, how a
user gets them. Config validation reads it (the name, a plan's images to train, a batch larger
than the training set) and so does `harness.train.data`, whose only table per dataset maps a
name to its reader (format readers in `harness.train.datasets`, numpy only).

Adding a dataset is its spec (a line in DATASETS, or `register(DatasetSpec(...))` at run time),
its reader (`harness.train.data.register(name, read)`, a module of `harness.train.datasets`)
and its YAML, `configs/dataset/<name>.yaml` (or a --config-dir's `dataset/<name>.yaml`).
`split` checks dataset.train_subset, test_subset, val_split and val_subset, once for a config
and again against the sizes read from the files; `images` checks the image shape read from the files
against what every model takes (MIN_IMAGE_SIZE, MIN_CHANNELS: their one home;
harness.train.models.build_model enforces the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

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


class Split(NamedTuple):
    """How a dataset's images are divided, checked (`split`): train on `train_subset` (None:
    all) less the `val_split` fraction held out of them, or validate on `val_subset` other
    training images (None: none); test on the first `test_subset` (None: all)."""

    train_subset: int | None
    test_subset: int | None
    val_split: float
    val_subset: int | None


def split(name: str, train_subset: Any, test_subset: Any, val_split: Any,
          val_subset: Any = None, sizes: tuple[int, int] | None = None) -> Split:
    """The Split normalized: each subset None or an integer >= 1, val_split a fraction in
    [0, 1), at most one of val_split and val_subset. With `sizes`, the (training, test) images
    read from the files, also each subset at most its split's size (not for a generated
    dataset, whose subsets are its sizes), train_subset + val_subset at most the training
    images, and a val_split that holds out at least one image and leaves one. Otherwise a
    SpecError (one line)."""
    subsets = [None if n is None else int(_SUBSET.check(f"dataset.{key}", n))
               for key, n in (("train_subset", train_subset), ("test_subset", test_subset),
                              ("val_subset", val_subset))]
    fraction = float(_VAL_SPLIT.check("dataset.val_split", val_split))
    if fraction and subsets[2] is not None:
        raise SpecError(f"dataset.val_split={fraction} and dataset.val_subset={subsets[2]} "
                        "both hold out validation images; valid: one of them (the other 0 / "
                        "null)")
    if subsets[2] is not None and get(name).source == "generated":
        raise SpecError(f"dataset.val_subset={subsets[2]}: dataset {name!r} is generated at "
                        "its subsets' sizes and has no other training images; valid: "
                        "val_subset=null (hold out a fraction with val_split)")
    if sizes is not None:
        if get(name).source != "generated":
            for key, n, size in zip(("train_subset", "test_subset"), subsets, sizes,
                                    strict=False):
                if n is not None and n > size:
                    raise SpecError(f"dataset.{key}={n} is out of range; valid: 1..{size}")
        n = subsets[0] or sizes[0]
        n_val = held_out(fraction, n)
        if fraction and not 1 <= n_val < n:
            raise SpecError(f"dataset.val_split={fraction} holds out {n_val} of {n} training "
                            "images; valid: a fraction that leaves at least one image on each "
                            "side")
        free = sizes[0] - (subsets[0] or 1)
        if subsets[2] is not None and subsets[2] > free:
            rest = (f"the training images outside train_subset={subsets[0]}" if subsets[0]
                    else "one training image must remain")
            raise SpecError(f"dataset.val_subset={subsets[2]} is out of range; valid: "
                            f"1..{free} ({rest})")
    return Split(subsets[0], subsets[1], fraction, subsets[2])


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


def train_images(name: str, split: Split, sizes: tuple[int, int] | None = None) -> int | None:
    """Images a cell trains on: the subset (else the whole training set, `sizes` as read, else
    the spec's, less val_subset) less those val_split holds out; None when not known without
    reading."""
    if split.train_subset:
        n = split.train_subset
    else:
        n = (sizes or get(name).sizes or (None, None))[0]
        n = None if n is None else n - (split.val_subset or 0)
    return None if n is None else n - held_out(split.val_split, n)
