"""A dataset added the documented way: its spec (harness.spec.dataset.register), its reader
(harness.train.data.register) and its YAML (here in a --config-dir): config validation, the
data check, the loader and a trained cell all see it, with nothing else edited."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.cli.run import main
from harness.config import compose
from harness.config.validate import planned_images
from harness.spec import dataset as spec
from harness.train import data
from harness.train.datasets import RawData, Reader, Source
from tests.conftest import TINY

TINY_SPEC = spec.DatasetSpec("tiny", sizes=(256, 64), source="generated", how_to_get=None,
                             fetchable=False, system_dirs=(), apt=None)
YAML = """\
name: tiny
root: null
path: null
download: false
train_subset: null
test_subset: null
augment: false
val_split: 0.0
val_subset: null
"""


def read(source: Source) -> RawData:
    """Two classes of 1 x 8 x 8 images: dark (class 0) or bright (class 1), plus noise."""
    rng = np.random.default_rng(0)

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n, dtype=np.int64) % 2
        x = 64 + 128 * y[:, None, None, None] + rng.integers(-30, 30, (n, 1, 8, 8))
        return x.astype(np.uint8), y

    n_train, n_test = (n or default for n, default in zip(source.sizes, TINY_SPEC.sizes,
                                                          strict=True))
    return RawData("tiny", *images(n_train), *images(n_test), num_classes=2)


@pytest.fixture
def tiny(tmp_path):
    spec.register(TINY_SPEC)
    data.register("tiny", Reader(read))
    conf = tmp_path / "conf" / "dataset"
    conf.mkdir(parents=True)
    (conf / "tiny.yaml").write_text(YAML)
    yield str(conf.parent)
    del spec.DATASETS["tiny"], data.READERS["tiny"]


def test_a_registered_dataset_with_its_yaml_validates_loads_and_trains_a_cell(
        tmp_path, monkeypatch, tiny):
    monkeypatch.chdir(tmp_path)
    [cell] = compose.cells(["dataset=tiny", "train.epochs=3"], config_dir=tiny)
    assert cell.dataset.name == "tiny" and planned_images(cell) == 3 * 256
    assert data.check("tiny", train_subset=100, val_split=0.1) == 90
    ds = data.load_dataset("tiny", train_subset=128, test_subset=32)
    assert (ds.n_train, ds.n_test, ds.in_channels, ds.image_size, ds.num_classes) == (
        128, 32, 1, 8, 2)
    overrides = [o for o in TINY if not o.startswith("dataset=")]
    assert main([*overrides, "--config-dir", tiny, "dataset=tiny", "study=t",
                 f"run.results_dir={tmp_path / 'results'}"]) == 0
    [path] = (tmp_path / "results" / "t" / "runs").glob("*.parquet")
    df = pd.read_parquet(path)
    assert (df["dataset"] == "tiny").all() and (df["status"] == "completed").all()
    assert df["n_train"].iloc[0] == 512 and df["num_classes"].iloc[0] == 2  # TINY's subset
    assert df["test_error"].iloc[-1] < 0.2  # chance: 0.5
