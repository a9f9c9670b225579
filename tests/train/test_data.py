"""harness.train.data and the format readers in harness.train.datasets (CPU; GPU where present)."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.train import data
from harness.train.data import Dataset, augment, load_dataset, normalize, train_batches
from harness.train.datasets import cifar
from tests.conftest import fashion_mnist_root

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def write_cifar(root: Path, per_batch: int = 4, n_test: int = 3, seed: int = 0) -> dict:
    """A tiny cifar-10-batches-py in the official on-disk format; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", n_test)]:
        batch = {
            b"batch_label": f"{name} of 5".encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        written[name] = batch
    return written


def test_cifar_round_trip(tmp_path):
    written = write_cifar(tmp_path)
    ds = load_dataset("cifar10", root=str(tmp_path))
    assert (ds.n_train, ds.n_test, ds.in_channels, ds.image_size) == (20, 3, 3, 32)
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    first = written["data_batch_1"][b"data"].reshape(4, 3, 32, 32)
    assert np.array_equal(ds.x_train[:4].numpy(), first)
    assert ds.x_train[0, 1, 0, 0].item() == written["data_batch_1"][b"data"][0, 1024]  # G plane
    labels = sum((written[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert ds.y_train.tolist() == labels
    assert ds.y_test.tolist() == written["test_batch"][b"labels"]
    x = ds.x_train.double() / 255
    assert torch.allclose(ds.mean.double(), x.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(ds.std.double(), x.std((0, 2, 3), unbiased=False), atol=1e-6)


def test_cifar_accepts_numpy1_pickles(tmp_path):
    """The official files name numpy.core.multiarray (numpy < 2); it must load on numpy 2 too."""
    written = write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    raw = path.read_bytes()
    assert b"numpy._core.multiarray\n_reconstruct" in raw
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    x, y = cifar.read_batch(path)
    assert np.array_equal(x.reshape(3, -1), written["test_batch"][b"data"])


def test_cifar_missing_and_corrupt_say_how_to_fetch(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m harness data fetch cifar10"):
        load_dataset("cifar10", root=str(tmp_path / "nowhere"))
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x02}q\x00(truncated")
    with pytest.raises(ValueError, match="corrupt CIFAR-10 batch .*data_batch_3.*fetch cifar10"):
        load_dataset("cifar10", root=str(tmp_path))


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("func", [os.system, eval])
def test_cifar_refuses_foreign_globals_without_running_them(tmp_path, func):
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w')"
    evil = {b"data": _Evil(func, cmd), b"labels": [0]}
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_2", "wb") as f:
        pickle.dump(evil, f, protocol=2)
    refused = r"refusing global (posix|nt|os|builtins|__builtin__)\.(system|eval)"
    with pytest.raises(ValueError, match=refused):
        load_dataset("cifar10", root=str(tmp_path))
    assert not marker.exists()


def test_cifar_refuses_codecs_other_than_latin1():
    with pytest.raises(pickle.UnpicklingError, match="rot13"):
        cifar._latin1_encode("abc", "rot13")


def test_fashion_mnist_real_files():
    ds = load_dataset("fashion_mnist", root=str(fashion_mnist_root()))
    assert tuple(ds.x_train.shape) == (60000, 1, 28, 28)
    assert tuple(ds.x_test.shape) == (10000, 1, 28, 28)
    assert ds.num_classes == 10
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.y_train[:4].tolist() == [9, 0, 0, 3]  # ankle boot, T-shirt, T-shirt, dress
    assert ds.mean.item() == pytest.approx(0.2860, abs=1e-4)  # the published statistics
    assert ds.std.item() == pytest.approx(0.3530, abs=1e-4)


def _write_idx(path: Path, magic: int, arr: np.ndarray) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def test_fashion_mnist_checks_magic(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 5), ("t10k", 3)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", 0x803,
                   rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", 0x801,
                   np.arange(n, dtype=np.uint8))
    ds = load_dataset("fashion_mnist", root=str(tmp_path))
    assert tuple(ds.x_train.shape) == (5, 1, 28, 28) and ds.y_test.tolist() == [0, 1, 2]
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x803, np.arange(3, dtype=np.uint8))
    with pytest.raises(ValueError, match="not a uint8 IDX file with 1 dims"):
        load_dataset("fashion_mnist", root=str(tmp_path))


def _save_npz(path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_npz_nhwc_and_nhw_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 5, 7, 2), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    ds = load_dataset("npz", path=_save_npz(tmp_path / "a.npz", x_train=x, y_train=y,
                                            x_test=x[:2], y_test=y[:2]))
    assert tuple(ds.x_train.shape) == (6, 2, 5, 7) and ds.num_classes == 3
    assert np.array_equal(ds.x_train.permute(0, 2, 3, 1).numpy(), x)
    gray = x[..., 0]
    ds = load_dataset("npz", path=_save_npz(tmp_path / "b.npz", x_train=gray, y_train=y,
                                            x_test=gray, y_test=np.array([4, 0, 0, 0, 0, 0])))
    assert tuple(ds.x_test.shape) == (6, 1, 5, 7) and ds.num_classes == 5
    assert np.array_equal(ds.x_train[:, 0].numpy(), gray)


@pytest.mark.parametrize("change, message", [
    ({"x_train": np.zeros((3, 4, 4), np.float32)}, "x_train must be uint8"),
    ({"y_train": np.array([0, -1, 1])}, "labels must be 0..K-1"),
    ({"y_train": np.array([0.0, 1.0, 1.0])}, "integer labels"),
    ({"y_test": np.array([0, 1])}, "expected 3 integer labels"),
    ({"x_test": np.zeros((3, 5, 5), np.uint8)}, "C, H, W must match"),
])
def test_npz_bad_files_give_clear_errors(tmp_path, change, message):
    arrays = {"x_train": np.zeros((3, 4, 4), np.uint8), "y_train": np.array([0, 1, 1]),
              "x_test": np.zeros((3, 4, 4), np.uint8), "y_test": np.array([0, 1, 0])}
    with pytest.raises(ValueError, match=message):
        load_dataset("npz", path=_save_npz(tmp_path / "bad.npz", **{**arrays, **change}))


def test_npz_missing_key_and_missing_path(tmp_path):
    with pytest.raises(ValueError, match=r"missing keys \['y_test'\]"):
        x = np.zeros((1, 2, 2), np.uint8)
        load_dataset("npz", path=_save_npz(tmp_path / "c.npz", x_train=x, y_train=[0], x_test=x))
    with pytest.raises(ValueError, match="dataset.path"):
        load_dataset("npz")


def test_imagenet32_official_format(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(1, 11):
        np.savez(tmp_path / f"train_data_batch_{i}.npz", labels=[i, 1000],
                 data=rng.integers(0, 256, (2, 3072), dtype=np.uint8), mean=np.zeros(3072))
    val = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    np.savez(tmp_path / "val_data.npz", data=val, labels=np.array([1, 2, 3]))
    ds = load_dataset("imagenet32", root=str(tmp_path))
    assert (ds.n_train, ds.n_test, ds.num_classes) == (20, 3, 1000)
    assert ds.y_train[:4].tolist() == [0, 999, 1, 999] and ds.y_test.tolist() == [0, 1, 2]
    assert np.array_equal(ds.x_test[1, 2].numpy().ravel(), val[1, 2048:])  # channel-major
    with pytest.raises(FileNotFoundError, match="registration"):
        load_dataset("imagenet32", root=str(tmp_path / "empty"))


def test_synthetic_deterministic_and_learnable():
    a = load_dataset("synthetic", train_subset=2000, test_subset=500)
    b = load_dataset("synthetic", train_subset=2000, test_subset=500)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert tuple(a.x_train.shape) == (2000, 3, 32, 32) and a.num_classes == 10
    assert torch.bincount(a.y_train).tolist() == [200] * 10
    x, xt = a.x_train.flatten(1).float(), a.x_test.flatten(1).float()
    means = torch.stack([x[a.y_train == c].mean(0) for c in range(10)])
    accuracy = (torch.cdist(xt, means).argmin(1) == a.y_test).float().mean().item()
    assert 0.35 < accuracy < 0.9  # far above chance (0.1), far from solved by a linear rule


def test_subsets_seeded_and_stats_on_subset(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 4, 4), dtype=np.uint8)
    x[:, 0, 0] = np.arange(50)  # pixel (0, 0) = index
    path = _save_npz(tmp_path / "s.npz", x_train=x, y_train=np.arange(50) % 3, x_test=x,
                     y_test=np.arange(50) % 3)
    a = load_dataset("npz", path=path, train_subset=10, test_subset=7)
    picked = a.x_train[:, 0, 0, 0].tolist()
    assert len(set(picked)) == 10 and picked == sorted(picked) and picked != list(range(10))
    assert a.x_test[:, 0, 0, 0].tolist() == list(range(7))  # test: the first n
    # the same subset every time: drawn from DATA_SEED, whatever the cell's seed
    assert torch.equal(load_dataset("npz", path=path, train_subset=10).x_train, a.x_train)
    assert picked == sorted(np.random.default_rng(data.DATA_SEED).choice(50, 10, replace=False))
    assert a.mean.item() == pytest.approx(a.x_train.double().mean().item() / 255, abs=1e-6)
    assert a.std.item() == pytest.approx(a.x_train.double().std(unbiased=False).item() / 255,
                                         abs=1e-6)


def test_val_split_holds_out_a_seeded_disjoint_part_of_the_training_subset(tmp_path):
    x = np.arange(50, dtype=np.uint8)[:, None, None].repeat(8, 1).repeat(8, 2)  # pixel = index
    path = _save_npz(tmp_path / "v.npz", x_train=x, y_train=np.arange(50) % 3, x_test=x[:5],
                     y_test=np.arange(5) % 3)
    full = load_dataset("npz", path=path, train_subset=40)
    split = load_dataset("npz", path=path, train_subset=40, val_split=0.25)
    train, val = split.x_train[:, 0, 0, 0].tolist(), split.x_val[:, 0, 0, 0].tolist()
    assert (split.n_train, split.n_val) == (30, 10) and not set(train) & set(val)
    assert sorted(train + val) == full.x_train[:, 0, 0, 0].tolist()
    assert split.mean.item() == pytest.approx(np.mean(train) / 255, abs=1e-6)  # train part only
    again = load_dataset("npz", path=path, train_subset=40, val_split=0.25)
    assert torch.equal(again.x_val, split.x_val)
    batches = list(data.val_batches(split, 4))
    assert [len(y) for _, y in batches] == [4, 4, 2] and full.n_val == 0
    assert list(data.val_batches(full, 4)) == []
    assert data.check("npz", path=str(path), train_subset=40, val_split=0.25) == 30
    with pytest.raises(data.DataError, match="val_split=0.001 holds out 0 of 40"):
        data.check("npz", path=str(path), train_subset=40, val_split=0.001)


def test_val_subset_validates_on_other_images_and_leaves_the_training_subset_alone(tmp_path):
    x = np.arange(50, dtype=np.uint8)[:, None, None].repeat(8, 1).repeat(8, 2)  # pixel = index
    path = _save_npz(tmp_path / "v.npz", x_train=x, y_train=np.arange(50) % 3, x_test=x[:5],
                     y_test=np.arange(5) % 3)
    plain = load_dataset("npz", path=path, train_subset=20)
    held = load_dataset("npz", path=path, train_subset=20, val_subset=25)
    train, val = held.x_train[:, 0, 0, 0].tolist(), held.x_val[:, 0, 0, 0].tolist()
    assert torch.equal(held.x_train, plain.x_train)  # the same 20 training images, same stats
    assert held.mean.item() == plain.mean.item()
    assert (held.n_train, held.n_val) == (20, 25) and not set(train) & set(val)
    assert val == sorted(val) and len(set(val)) == 25
    assert torch.equal(load_dataset("npz", path=path, train_subset=20, val_subset=25).x_val,
                       held.x_val)  # DATA_SEED: the same for every cell
    everything = load_dataset("npz", path=path, val_subset=10)  # no subset: train on the rest
    assert (everything.n_train, everything.n_val) == (40, 10)
    assert sorted(everything.x_train[:, 0, 0, 0].tolist()
                  + everything.x_val[:, 0, 0, 0].tolist()) == list(range(50))
    assert data.check("npz", path=str(path), train_subset=20, val_subset=30) == 20
    assert data.check("npz", path=str(path), val_subset=10) == 40
    with pytest.raises(data.DataError, match=r"val_subset=31 is out of range; valid: 1\.\.30"):
        data.check("npz", path=str(path), train_subset=20, val_subset=31)


def _index_dataset(n: int) -> Dataset:
    """n images whose pixels and label both equal their index (n <= 256)."""
    x = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 1, 4, 4).contiguous()
    return Dataset("index", x, torch.arange(n), x[:3], torch.arange(3), n,
                   torch.zeros(1), torch.full((1,), 1 / 255))


def test_train_batches_cover_every_index_once_and_keep_last_batch():
    ds = _index_dataset(10)
    batches = list(train_batches(ds, 4, torch.Generator().manual_seed(0), augment=False))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    for x, y in batches:  # images travel with their labels; normalize(mean 0, std 1/255) = pixel
        assert x.dtype == torch.float32 and torch.allclose(x[:, 0, 0, 0], y.float())
    again = [y for _, y in train_batches(ds, 4, torch.Generator().manual_seed(0), augment=False)]
    other = [y for _, y in train_batches(ds, 4, torch.Generator().manual_seed(1), augment=False)]
    assert torch.equal(torch.cat(again), seen) and not torch.equal(torch.cat(other), seen)


def test_test_batches_in_order_and_normalized():
    ds = load_dataset("synthetic", train_subset=100, test_subset=10)
    xs, ys = zip(*data.test_batches(ds, 4), strict=True)
    assert [len(y) for y in ys] == [4, 4, 2] and torch.equal(torch.cat(ys), ds.y_test)
    assert torch.allclose(torch.cat(xs), normalize(ds.x_test, ds.mean, ds.std))
    x = torch.cat([b for b, _ in train_batches(ds, 100, torch.Generator(), augment=False)])
    assert x.mean((0, 2, 3)).abs().max() < 1e-4 and (x.std((0, 2, 3)) - 1).abs().max() < 1e-2


def _coordinate_images(n: int, h: int = 8, w: int = 8) -> torch.Tensor:
    """Channel 0 = row+1, channel 1 = column+1 (0 only in padding), channel 2 random."""
    rows = torch.arange(1, h + 1, dtype=torch.uint8)[:, None].expand(h, w)
    cols = torch.arange(1, w + 1, dtype=torch.uint8)[None, :].expand(h, w)
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (n, 1, h, w), dtype=torch.uint8, generator=g)
    return torch.cat([rows.expand(n, 1, h, w), cols.expand(n, 1, h, w), noise], dim=1)


def _infer_crop(out: torch.Tensor, pad: int) -> tuple[int, int, bool]:
    """(dy, dx, flipped) of one augmented coordinate image, read off its coordinate channels."""
    r, c = ((out[0] > 0) & (out[1] > 0)).nonzero()[0].tolist()  # a pixel of the original
    row_cols = out[1, r][out[1, r] > 0]
    flipped = bool(row_cols[0] > row_cols[-1])  # column numbers run backwards
    col = int(out[1, r, c]) - 1 + pad  # its column in the padded image
    dx = col - (out.shape[-1] - 1 - c) if flipped else col - c
    return int(out[0, r, c]) - 1 + pad - r, dx, flipped


def test_augment_matches_reference_slicing():
    x, pad = _coordinate_images(64), 4
    out = augment(x, torch.Generator().manual_seed(0), pad=pad)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    crops = set()
    for i in range(len(x)):
        dy, dx, flipped = _infer_crop(out[i], pad)
        assert 0 <= dy <= 2 * pad and 0 <= dx <= 2 * pad
        ref = padded[i, :, dy:dy + 8, dx:dx + 8]
        assert torch.equal(out[i], ref.flip(-1) if flipped else ref)
        crops.add((dy, dx))
    assert len(crops) > 20  # every image gets its own offsets


def test_augment_flip_rate_identity_and_determinism():
    x = _coordinate_images(2000, 4, 4)
    out = augment(x, torch.Generator().manual_seed(0), pad=0)
    flipped = (out[:, 1, 0, 0] == 4).float().mean().item()
    assert 0.46 < flipped < 0.54 and torch.equal(out[:, 0], x[:, 0])
    assert torch.equal(augment(x, torch.Generator(), pad=0, flip=False), x)
    a = augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, augment(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, augment(x, torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError, match="uint8"):
        augment(x.float(), torch.Generator())


def test_errors_name_valid_choices(tmp_path):
    with pytest.raises(ValueError, match="^dataset='mnist' is not valid; choose one of: cifar10, "
                                         "fashion_mnist, imagenet32, synthetic, npz$"):
        load_dataset("mnist")
    x = np.zeros((5, 2, 2), np.uint8)
    path = _save_npz(tmp_path / "five.npz", x_train=x, y_train=np.arange(5) % 2, x_test=x,
                     y_test=np.arange(5) % 2)
    with pytest.raises(ValueError, match=r"^dataset.train_subset=10 is out of range; "
                                         r"valid: 1\.\.5$"):
        load_dataset("npz", path=path, train_subset=10)


def test_cli_info_and_fetch(capsys):
    from harness.cli.data import main

    assert main(["info", "synthetic"]) == 0
    assert "(5000, 3, 32, 32)" in capsys.readouterr().out
    assert main(["fetch", "imagenet32"]) == 2
    assert "registration" in capsys.readouterr().err
    assert main(["fetch", "synthetic"]) == 2
    assert capsys.readouterr().err == ("harness data: error: dataset 'synthetic' has nothing to "
                                       "fetch; valid: cifar10, fashion_mnist\n")


def test_check_says_once_how_to_get_missing_corrupt_or_undownloadable_data(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "empty"))
    # whatever this machine holds (Debian's dataset-fashion-mnist): no system copy is searched
    monkeypatch.setenv(data.SYSTEM_DATA, str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    assert data.check("synthetic", train_subset=300) == 300
    with pytest.raises(data.DataError, match=r"^Fashion-MNIST \(4 IDX .gz files\) not found.*apt"):
        data.check("fashion_mnist", root=str(tmp_path))
    (tmp_path / "bad.npz").write_bytes(b"PK not a zip")
    with pytest.raises(data.DataError, match="bad.npz is not a readable .npz"):
        data.check("npz", path=str(tmp_path / "bad.npz"))
    write_cifar(tmp_path / "c", per_batch=2, n_test=3)
    assert data.check("cifar10", root=str(tmp_path / "c")) == 10
    with pytest.raises(data.DataError, match=r"dataset.test_subset=9 is out of range; valid: 1"):
        data.check("cifar10", root=str(tmp_path / "c"), test_subset=9)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # downloads fail at once
    with pytest.raises(data.DataError, match="cannot be downloaded .*data fetch cifar10"):
        data.check("cifar10", root=str(tmp_path / "new"), download=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz", "c"]


def test_batches_are_the_draws_of_one_cpu_generator_in_a_fixed_order():
    """randperm(n), then per batch randint (2, b) and rand (b): the stream the batches of every
    committed CPU run were drawn from, now drawn at the epoch's start for every device."""
    ds = load_dataset("synthetic", train_subset=100, test_subset=10)
    got = list(train_batches(ds, 32, torch.Generator().manual_seed(7)))
    g = torch.Generator().manual_seed(7)
    order = torch.randperm(100, generator=g)
    for (x, y), start in zip(got, range(0, 100, 32), strict=True):
        index = order[start:start + 32]
        n = len(index)
        dy, dx = torch.randint(0, 9, (2, n), generator=g)
        flipped = torch.rand(n, generator=g) < 0.5
        padded = torch.nn.functional.pad(ds.x_train[index], (4,) * 4)
        rows = dy[:, None] + torch.arange(32)
        cols = dx[:, None] + torch.arange(32)
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
        want = padded.gather(2, rows[:, None, :, None].expand(n, 3, 32, 40))
        want = want.gather(3, cols[:, None, None, :].expand(n, 3, 32, 32))
        assert torch.equal(y, ds.y_train[index])
        assert torch.equal(x, data.normalize(want, ds.mean, ds.std))
    on_gpu = type("G", (), {"device": torch.device("cuda")})()  # a generator's device only
    with pytest.raises(ValueError, match="drawn on the CPU for every device"):
        next(train_batches(ds, 32, on_gpu))


@CUDA
def test_gpu_batches_stay_on_device_and_equal_the_cpu_batches_of_the_same_seed():
    ds = load_dataset("synthetic", train_subset=512, test_subset=64, device="cuda")
    on_cpu = load_dataset("synthetic", train_subset=512, test_subset=64)
    x, y = next(train_batches(ds, 128, torch.Generator().manual_seed(0)))
    assert x.is_cuda and y.is_cuda and x.dtype == torch.float32 and x.shape == (128, 3, 32, 32)
    cx, cy = next(train_batches(on_cpu, 128, torch.Generator().manual_seed(0)))
    assert torch.equal(y.cpu(), cy) and torch.allclose(x.cpu(), cx, atol=1e-6)
    cpu = _coordinate_images(64).cuda()
    out = augment(cpu, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(cpu, (4,) * 4)
    for i in range(8):
        dy, dx, flipped = _infer_crop(out[i].cpu(), 4)
        ref = padded[i, :, dy:dy + 8, dx:dx + 8]
        assert torch.equal(out[i], ref.flip(-1) if flipped else ref)
