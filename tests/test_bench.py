"""`python -m harness bench` (benchmarks/throughput.py): the real CLI on a CPU, its errors, FLOP
counts against counts made another way, the device tables' order and bounds, the slug."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import tempfile
import time

import pytest
import torch
from benchmarks import throughput as bench
from torch import nn

from harness.sweep.records import cpu_model
from harness.train.models import MODELS, build_model
from tests.conftest import ROOT, harness_cli


def test_cli_quick_writes_json_and_prints_table(tmp_path):
    result = harness_cli(["bench", "--quick", "--device", "cpu", "--out", str(tmp_path)],
                         cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "cpu.json").read_text())
    assert report["device_slug"] == "cpu" and report["device"] == (cpu_model() or "cpu")
    assert report["torch_version"] == torch.__version__
    assert report["settings"] == {"models": ["resnet20"], "packs": [1, 2], "steps": 2,
                                  "warmup": 1, "batch_size": 16, "device": "cpu",
                                  "compile": False}
    assert report["flops_per_image"]["resnet20"] == {"forward": 2 * RESNET20_MACS,
                                                     "training": RESNET20_TRAINING}
    rows = report["results"]
    assert [(r["model"], r["method"], r["K"]) for r in rows] == [
        ("resnet20", "naive", 1), ("resnet20", "strong", 1), ("resnet20", "harness", 1),
        ("resnet20", "harness", 2)]
    naive, strong = rows[0]["images_per_s"], rows[1]["images_per_s"]
    for r in rows:
        assert r["status"] == "ok" and r["images_per_s"] > 0
        assert r["ratio_vs_naive"] == pytest.approx(r["images_per_s"] / naive, rel=1e-12)
        assert r["ratio_vs_strong"] == pytest.approx(r["images_per_s"] / strong, rel=1e-12)
        assert r["peak_memory_gib"] is None and r["mfu"] is None  # CPU: no CUDA peak, no peak
        assert r["roofline_fraction"] is None  # no roofline constant for a CPU
    assert rows[0]["ratio_vs_naive"] == 1.0 and rows[1]["ratio_vs_strong"] == 1.0
    lines = result.stdout.splitlines()
    assert re.match(r"model\s+method\s+K\s+images/s\s+vs naive\s+vs strong\s+peak GiB\s+MFU"
                    r"\s+roofline$", lines[1])
    assert re.search(r"^resnet20\s+naive\s+1\s+[\d,]+\s+1\.00\s+\d+\.\d\d\s+-\s+-\s+-$",
                     result.stdout, re.M)
    assert re.search(r"^resnet20\s+harness\s+2\s+[\d,]+\s+\d+\.\d\d\s+\d+\.\d\d\s+-\s+-\s+-$",
                     result.stdout, re.M)
    assert lines[-1] == f"wrote {tmp_path / 'cpu.json'}"


@pytest.mark.parametrize("args, named", [
    (["--models", "resnet20", "vgg11"], "invalid choice: 'vgg11' (choose from"),
    (["--packs", "1", "0"], "--packs [1, 0] is not valid; give integers >= 1"),
    (["--steps", "ten"], "'ten'"),
    (["--batch-size", "0"], "--batch-size 0 is not valid; give integers >= 1"),
    (["--warmup", "-1"], "--warmup -1 is not valid; give integers >= 0"),
    (["--device", "tpu"], "--device 'tpu' is not valid; choose auto or cpu"),
    (["--frobnicate"], "--frobnicate"),
])
def test_bad_option_exits_2_with_one_line(args, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("harness bench: error:") and named in err[0]


def _resnet20_macs() -> tuple[int, int]:
    """Multiply-adds of one 32x32 image through ResNet-20 (He et al. 2016, CIFAR: a 3x3 conv
    to 16 channels, three stages of three basic blocks at 16, 32, 64 channels on 32, 16, 8
    pixels, identity shortcuts padded with zeros, a 64 -> 10 linear), counted by hand; and
    those of the first conv, the one layer whose input (the image) needs no gradient."""
    def conv(pixels: int, c_in: int, c_out: int) -> int:
        return pixels * pixels * c_in * c_out * 9

    first = conv(32, 3, 16)
    stages = (6 * conv(32, 16, 16) + conv(16, 16, 32) + 5 * conv(16, 32, 32)
              + conv(8, 32, 64) + 5 * conv(8, 64, 64))
    return first + stages + 64 * 10, first


RESNET20_MACS, RESNET20_FIRST_MACS = _resnet20_macs()
# FLOPs (a multiply-add = 2) of forward + backward: the backward takes the weight gradient and
# the input gradient of every layer (each as many multiply-adds as its forward), except the
# first layer's input gradient
RESNET20_TRAINING = 2 * (3 * RESNET20_MACS - RESNET20_FIRST_MACS)
BENCH_MODELS = sorted({m for models, *_ in bench.DEFAULTS.values() for m in models})


@functools.cache
def _count(model: str) -> bench.FlopCount:
    return bench.count_flops(model)


def test_resnet20_flops_per_image_match_a_count_by_hand():
    """FlopCounterMode's count (multiply-add = 2 FLOPs, only convs and matmuls) equals the
    architecture's, counted by hand: 40.55M multiply-adds forward, the ~40.8M usually quoted."""
    flops = _count("resnet20")
    assert flops.forward == 2 * RESNET20_MACS == 81_102_080
    assert flops.training == RESNET20_TRAINING
    assert bench.count_flops("resnet20", batch=3) == flops  # per image: batch does not matter


@pytest.mark.parametrize("model", BENCH_MODELS)
def test_flops_of_every_bench_model_match_a_count_over_its_layers(model):
    """An independent count for each model the bench measures: forward hooks on every conv and
    linear layer (output elements x input elements per output), the backward as above."""
    net = build_model(model).train()
    image = torch.randn(2, 3, 32, 32)
    macs, first = [], []

    def hook(layer, inputs, output):
        per_output = layer.weight[0].numel() if isinstance(layer, nn.Conv2d) else \
            layer.in_features
        macs.append(output.numel() // 2 * per_output)
        if inputs[0] is image:
            first.append(macs[-1])

    for layer in net.modules():
        if isinstance(layer, nn.Conv2d | nn.Linear):
            layer.register_forward_hook(hook)
    net(image)
    assert first and _count(model) == bench.FlopCount(2 * sum(macs),
                                                      2 * (3 * sum(macs) - sum(first)))


def test_models_the_bench_names_are_registered():
    """A misspelt key would surface only on a GPU (the CUDA defaults) or as a roofline that is
    silently None."""
    named = set(BENCH_MODELS) | {m for _, table in bench.ROOFLINE_IMAGES_PER_S for m in table}
    assert named <= set(MODELS)


@pytest.mark.parametrize("table", ["PEAK_BF16_FLOPS", "ROOFLINE_IMAGES_PER_S"])
def test_device_tables_read_the_longest_name_first(table, monkeypatch):
    """The tables are matched in order against the device name, so a key must come before any
    key it is part of ("H100 PCIe" before "H100"), or the longer one is never read: with each
    entry replaced by its position, every key's own device name reads its own entry."""
    keys = [key for key, _ in getattr(bench, table)]
    for i, key in enumerate(keys):
        assert not any(earlier.lower() in key.lower() for earlier in keys[:i]), (key, keys[:i])
    if table == "PEAK_BF16_FLOPS":
        monkeypatch.setattr(bench, table, tuple((key, i) for i, key in enumerate(keys)))
        read = bench.peak_flops
    else:
        monkeypatch.setattr(bench, table, tuple((key, {"resnet20": i})
                                                for i, key in enumerate(keys)))
        read = functools.partial(bench.roofline, model="resnet20")
    assert [read(f"NVIDIA {key.upper()} 80GB") for key in keys] == list(range(len(keys)))
    assert read("Tesla V100-SXM2-16GB") is None and read("Intel(R) Xeon(R) Processor") is None


@pytest.mark.parametrize("model", sorted({m for _, t in bench.ROOFLINE_IMAGES_PER_S for m in t}))
def test_roofline_is_within_the_compute_bound(model):
    """Every roofline (images/s) has a peak for its device, and at most the peak divided by the
    model's training FLOPs per image: no constant claims more than the tensor cores compute."""
    for key, table in bench.ROOFLINE_IMAGES_PER_S:
        if model in table:
            peak = bench.peak_flops(key)
            assert peak is not None, key
            assert table[model] <= peak / _count(model).training, (key, model)


@pytest.mark.parametrize("name", ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB MIG 1g.5gb",
                                  "NVIDIA GeForce RTX 4090 (laptop)", "Radeon™ / Instinct MI300X",
                                  "  cuda:0  "])
def test_device_slug_is_one_safe_file_name(name):
    """<out>/<slug>.json: a name with a slash, spaces or symbols stays one lower-case path
    component of letters, digits and single hyphens, and slugging it again changes nothing."""
    slug = bench.device_slug(name)
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug), slug
    assert bench.device_slug(slug) == slug


def test_packs_stop_growing_at_first_out_of_memory():
    """The CUDA allocator cannot be exhausted on a CPU, so the measurement raises its error."""
    settings = bench.parse_args(["--device", "cpu", "--packs", "8", "1", "4", "2"])
    assert settings.packs == (1, 2, 4, 8)

    def measure(model: str, packs: int, s: bench.Settings) -> float:
        if packs >= 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return 100.0 * packs

    def broken(model: str, packs: int, s: bench.Settings) -> float:
        raise RuntimeError("Expected all tensors to be on the same device")

    results = bench.measure_packs("resnet20", settings, 1e9, 1e12, 50.0, measure=measure)
    assert [(r.K, r.status, r.images_per_s, r.ratio_vs_naive, r.mfu) for r in results] == [
        (1, "ok", 100.0, 2.0, 0.1), (2, "ok", 200.0, 4.0, 0.2), (4, "oom", None, None, None)]
    table = bench.format_table({"device": "cpu", "torch_version": torch.__version__,
                                "results": [dataclasses.asdict(r) for r in results]})
    assert re.search(r"^resnet20\s+harness\s+2\s+200\s+4\.00\s+-\s+-\s+20\.0%\s+-$", table,
                     re.M)
    assert re.search(r"^resnet20\s+harness\s+4\s+OOM\s+-\s+-\s+-\s+-\s+-$", table, re.M)
    with pytest.raises(RuntimeError, match="same device"):  # only running out of memory is data
        bench.measure_packs("resnet20", settings, 1e9, None, 50.0, measure=broken)


def _harness_run_seconds(tmp_path, packs: int, epochs: int, epoch_steps: int,
                         batch: int) -> float:
    """Wall time of a real `harness run` (one thread) of the cells `bench.bench_cells` makes:
    `packs` cells of an lr grid, packed, `epochs` epochs of `epoch_steps` batches."""
    lrs = ",".join(repr(bench.LR * 2.0 ** -(k % 4)) for k in range(packs))
    tic = time.perf_counter()
    result = harness_cli([
        "run", "study=bench", "model=small", "dataset=synthetic",
        f"dataset.train_subset={epoch_steps * batch}", f"dataset.test_subset={batch}",
        "optimizer=sgd", f"optimizer.lr=[{lrs}]", f"optimizer.momentum={bench.MOMENTUM!r}",
        "decay=decoupled", f"decay.weight_decay={bench.LR * bench.WEIGHT_DECAY!r}",
        "schedule=cosine", f"train.epochs={epochs}", f"train.batch_size={batch}",
        "train.eval_every=1000000000", "train.device=cpu", "train.checkpoint_every=0",
        f"train.pack={packs}", "logger=none", "logger.progress=none",
        f"run.results_dir={tempfile.mkdtemp(dir=tmp_path)}"], cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return time.perf_counter() - tic


@pytest.mark.slow
def test_pack_rate_matches_the_wall_clock_of_harness_run(tmp_path):
    """A pack of K cells trains K x B images per batch of B, no more: the bench's harness row
    for K = 2 agrees within 25% with an independent measurement, the wall time of two real
    `harness run`s of the same cells that differ by `extra` epochs (start-up, setup and the
    final evaluation cancel in the difference). Each is the best of two tries, interleaved,
    as a shared machine's load comes and goes. Counting a pack's images twice reads 2x."""
    packs, epoch_steps, batch, extra = 2, 8, 64, 12
    settings = bench.parse_args(["--device", "cpu", "--models", "small", "--packs", "2",
                                 "--steps", str(4 * epoch_steps), "--warmup", str(epoch_steps),
                                 "--batch-size", str(batch)])
    short, long, rates = [], [], []
    threads = torch.get_num_threads()
    for _ in range(2):
        short.append(_harness_run_seconds(tmp_path, packs, 1, epoch_steps, batch))
        torch.set_num_threads(1)
        try:
            rates.append(bench.harness_images_per_s("small", packs, settings))
        finally:
            torch.set_num_threads(threads)
        long.append(_harness_run_seconds(tmp_path, packs, 1 + extra, epoch_steps, batch))
    measured = extra * epoch_steps * batch * packs / (min(long) - min(short))
    assert max(rates) == pytest.approx(measured, rel=0.25), (rates, measured, short, long)


def test_json_is_rewritten_after_every_row(tmp_path, monkeypatch):
    """A bench cut short (a device call's timeout) still leaves every row measured: when each
    measurement starts, the JSON on disk holds every row before it."""
    seen = []

    def rows_on_disk() -> list[tuple[str, int]]:
        path = tmp_path / "cpu.json"
        report = json.loads(path.read_text()) if path.exists() else {"results": []}
        return [(r["method"], r["K"]) for r in report["results"]]

    def measure(name: str, rate: float):
        def fake(*args, **kwargs) -> float:
            seen.append((name, args[1] if name == "harness" else 1, rows_on_disk()))
            return rate
        return fake

    monkeypatch.setattr(bench, "naive_images_per_s", measure("naive", 10.0))
    monkeypatch.setattr(bench, "strong_images_per_s", measure("strong", 20.0))
    monkeypatch.setattr(bench, "harness_images_per_s", measure("harness", 30.0))
    report = bench.run_bench(bench.parse_args(["--device", "cpu", "--packs", "1", "2", "4",
                                               "--out", str(tmp_path)]))
    assert [(name, k, len(rows)) for name, k, rows in seen] == [
        ("naive", 1, 0), ("strong", 1, 0), ("harness", 1, 2), ("harness", 2, 3),
        ("harness", 4, 4)]
    assert seen[-1][2] == [("naive", 1), ("strong", 1), ("harness", 1), ("harness", 2)]
    assert rows_on_disk() == [(r["method"], r["K"]) for r in report["results"]]
    assert [r["ratio_vs_strong"] for r in report["results"]] == [0.5, 1.0, 1.5, 1.5, 1.5]
