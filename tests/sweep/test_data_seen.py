"""What data a cell saw (issue 22, item 5): each record names the fingerprint of the arrays the
cell trained, validated and tested on and where they were read; a finished cell whose data has
changed since is trained again, never skipped as "already completed"; a dataset.root holding
only some of a dataset's files is one line naming what is missing, never a silent fall back to
another copy (the system directories included, which a test points where it likes)."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from harness.config import compose
from harness.sweep import checkpoint
from harness.sweep.cells import load_data, run_cells
from harness.sweep.recorder import CellPaths
from harness.train import data
from harness.train.loop import train

SYSTEM_DATA = "HARNESS_SYSTEM_DATA"  # the setting that replaces the spec's system_dirs
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")


def write_idx(path: Path, arr: np.ndarray) -> None:
    magic = 0x803 if arr.ndim == 3 else 0x801
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def fake_fashion(folder: Path, n_train: int = 96, n_test: int = 32, seed: int = 0,
                 labels: np.ndarray | None = None) -> np.ndarray:
    """A tiny Fashion-MNIST in its IDX format under folder/fashion-mnist; its train labels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n_train, dtype=np.uint8) % 10 if labels is None else labels
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), np.uint8),
              "train-labels-idx1-ubyte": y,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), np.uint8),
              "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10}
    for name, arr in arrays.items():
        write_idx(folder / "fashion-mnist" / f"{name}.gz", arr)
    return y


def cell(tmp_path: Path, root: Path, epochs: int = 1):
    cfg, = compose.cells([
        "dataset=fashion_mnist", f"dataset.root={root}", "dataset.val_split=0.25",
        "model=small", f"train.epochs={epochs}", "train.batch_size=32", "train.device=cpu",
        "logger=none", "logger.progress=none", "optimizer=sgd", "optimizer.lr=0.01",
        "decay=decoupled", "study=seen", f"run.results_dir={tmp_path / 'results'}"])
    return cfg


@pytest.fixture
def no_system_data(tmp_path, monkeypatch):
    """Whatever this machine holds in /usr/share/datasets: none of it is searched."""
    monkeypatch.setenv(SYSTEM_DATA, str(tmp_path / "no-system-data"))
    monkeypatch.delenv("HARNESS_DATA", raising=False)
    monkeypatch.chdir(tmp_path)


def test_a_cell_records_the_data_it_saw_and_retrains_when_it_changed(tmp_path, no_system_data,
                                                                      capsys):
    root = tmp_path / "data"
    labels = fake_fashion(root)
    cfg = cell(tmp_path, root)
    path = CellPaths.of(cfg).parquet
    assert run_cells([cfg]) == {cfg.run_id: "completed"}
    first = pd.read_parquet(path)
    assert run_cells([cfg]) == {cfg.run_id: "skipped"}  # same data: done
    capsys.readouterr()

    fake_fashion(root, labels=np.random.default_rng(1).permutation(labels))  # same root
    assert run_cells([cfg]) == {cfg.run_id: "completed"}  # trained again, not skipped
    out = capsys.readouterr().out
    assert "was trained on other data" in out and "skipped" not in out
    second = pd.read_parquet(path)
    assert (second["run_id"] == cfg.run_id).all()
    assert second["data_fingerprint"].iloc[0] != first["data_fingerprint"].iloc[0]
    assert (second["data_fingerprint"] == data.load_dataset(
        "fashion_mnist", root=str(root), val_split=0.25).fingerprint).all()
    assert (second["data_source"] == str((root / "fashion-mnist").resolve())).all()
    fingerprint = data.identify("fashion_mnist", root=str(root), val_split=0.25)[0]
    assert fingerprint == second["data_fingerprint"].iloc[0]
    assert fingerprint.startswith("sha256:") and len(fingerprint) == 71
    assert run_cells([cfg]) == {cfg.run_id: "skipped"}


def test_a_record_without_a_fingerprint_counts_as_matching(tmp_path, no_system_data):
    """Files written before the column existed (or migrated, null) say nothing of their data:
    they stay done, as they were before the fingerprint was recorded."""
    root = tmp_path / "data"
    fake_fashion(root)
    cfg = cell(tmp_path, root)
    assert run_cells([cfg]) == {cfg.run_id: "completed"}
    path = CellPaths.of(cfg).parquet
    table = pq.read_table(path)
    for col in ("data_fingerprint", "data_source"):
        i = table.schema.get_field_index(col)
        table = table.set_column(i, col, pa.nulls(len(table), pa.string()))
    pq.write_table(table, path)
    fake_fashion(root, seed=5)
    assert run_cells([cfg]) == {cfg.run_id: "skipped"}
    pq.write_table(table.drop_columns(["data_fingerprint", "data_source"]), path)
    assert run_cells([cfg]) == {cfg.run_id: "skipped"}


def test_a_checkpoint_of_other_data_is_not_resumed(tmp_path, no_system_data, capsys):
    root = tmp_path / "data"
    fake_fashion(root)
    cfg = cell(tmp_path, root, epochs=2)
    cpu = torch.device("cpu")
    ep = next(train([cfg], load_data(cfg, cpu), cpu))[0]
    state = ep.state() | {"records": [dataclasses.asdict(ep.metrics)]}
    now = data.identify("fashion_mnist", root=str(root), val_split=0.25)[0]
    paths = CellPaths.of(cfg)
    for seen, resumed in (("sha256:" + "0" * 64, False), (now, True), (None, True)):
        paths.parquet.unlink(missing_ok=True)
        checkpoint.save(state | ({} if seen is None else {"data_fingerprint": seen}),
                        paths.checkpoint, cfg.run_id)
        capsys.readouterr()
        assert run_cells([cfg]) == {cfg.run_id: "completed"}
        err = capsys.readouterr().err
        assert ("unusable: it was trained on other data" in err) is not resumed, err
        assert len(pd.read_parquet(paths.parquet)) == 2


def test_the_fingerprint_covers_the_subset_validation_and_image_size(tmp_path, no_system_data):
    a, b = tmp_path / "a", tmp_path / "b"
    fake_fashion(a)
    fake_fashion(b)
    ident = {str(k): data.identify("fashion_mnist", root=str(a), **k)[0] for k in (
        {}, {"val_split": 0.25}, {"train_subset": 64}, {"test_subset": 16})}
    assert len(set(ident.values())) == 4
    assert data.identify("fashion_mnist", root=str(b))[0] == data.identify(
        "fashion_mnist", root=str(a))[0]  # the same arrays elsewhere: the same data
    path = tmp_path / "x.npz"
    rng = np.random.default_rng(0)
    for side in (16, 12):
        np.savez(path, x_train=rng.integers(0, 256, (20, side, side), np.uint8),
                 y_train=np.arange(20) % 2, x_test=rng.integers(0, 256, (4, side, side),
                                                                  np.uint8),
                 y_test=np.arange(4) % 2)
        ident[str(side)] = data.identify("npz", path=str(path))
    assert ident["16"][0] != ident["12"][0] and ident["16"][1] == str(path.resolve())


def test_an_incomplete_root_is_one_line_naming_what_is_missing(tmp_path, monkeypatch):
    system = tmp_path / "system"
    fake_fashion(system)  # a complete copy where the system directories are
    monkeypatch.setenv(SYSTEM_DATA, str(system / "fashion-mnist"))
    monkeypatch.delenv("HARNESS_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert data.check("fashion_mnist") == 96  # found there: the setting is honoured
    partial = tmp_path / "partial"
    fake_fashion(partial)
    (partial / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(data.DataError) as err:
        data.check("fashion_mnist", root=str(partial))
    text = str(err.value)
    assert "\n" not in text and "is incomplete: missing t10k-labels-idx1-ubyte" in text
    assert str(partial / "fashion-mnist") in text
    with pytest.raises(FileNotFoundError, match="incomplete: missing t10k-labels"):
        data.load_dataset("fashion_mnist", root=str(partial))

    cifar = tmp_path / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    (cifar / "data_batch_1").write_bytes(b"")
    with pytest.raises(data.DataError, match=r"^CIFAR-10 in .*cifar-10-batches-py is "
                                             r"incomplete: missing data_batch_2, data_batch_3"):
        data.check("cifar10", root=str(tmp_path / "cifar"))


def test_the_system_directories_are_a_setting(tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_DATA", raising=False)
    monkeypatch.setenv(SYSTEM_DATA, f"{tmp_path / 'x'}:{tmp_path / 'y'}")
    assert data.search_dirs("fashion_mnist")[-2:] == [tmp_path / "x", tmp_path / "y"]
    monkeypatch.setenv(SYSTEM_DATA, "")
    assert data.search_dirs("fashion_mnist") == [Path("data")]
    monkeypatch.delenv(SYSTEM_DATA)
    assert data.search_dirs("fashion_mnist")[-1] == Path("/usr/share/datasets/fashion-mnist")
