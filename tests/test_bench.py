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
    assert [(r["model"], r["method"], r["K"], r["status"]) for r in rows] == [
        ("resnet20", "naive", 1, "ok"), ("resnet20", "strong:eager", 1, "ok"),
        ("resnet20", "strong:compile", 1, "skipped"),
        ("resnet20", "strong:cudagraphs", 1, "skipped"), ("resnet20", "strong", 1, "ok"),
        ("resnet20", "harness", 1, "ok"), ("resnet20", "harness", 2, "ok"),
        ("resnet20", "vmap", 1, "ok"), ("resnet20", "vmap", 2, "ok")]
    assert rows[2]["note"] == "torch.compile on a CPU only with --compile"
    assert rows[3]["note"] == "CUDA graphs need a CUDA device"
    assert rows[4]["note"] == "best of eager, compile, cudagraphs: strong:eager"
    assert rows[4]["images_per_s"] == rows[1]["images_per_s"]
    convs = report["conv_microbench"]  # ResNet-20's grouped convs at K = 2: 5 shapes
    assert len(convs) == 5 and all(c["grouped_s"] > 0 and c["dense_s"] > 0 for c in convs)
    assert sum(c["count"] for c in convs) == 18  # 19 convs, the first reads the shared image
    assert any(line.startswith("fig2_lite: 336 cells, 504,000,000 images of resnet20 / "
                               "harness K=1") and "CPU core-hours" in line
               for line in report["summary"])
    rows = [r for r in rows if r["status"] == "ok"]
    naive, strong = rows[0]["images_per_s"], rows[1]["images_per_s"]
    for r in rows:
        assert r["images_per_s"] > 0
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
    assert lines[-2] == report["summary"][-1]


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
    assert results[-1].note == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB"
    table = bench.format_table({"device": "cpu", "torch_version": torch.__version__,
                                "results": [dataclasses.asdict(r) for r in results]})
    assert re.search(r"^resnet20\s+harness\s+2\s+200\s+4\.00\s+-\s+-\s+20\.0%\s+-$", table,
                     re.M)
    assert re.search(r"^resnet20\s+harness\s+4\s+OOM\s+-\s+-\s+-\s+-\s+-  OutOfMemoryError: "
                     r"CUDA out of memory\. Tried to allocate 2 GiB$", table, re.M)
    (failed,) = bench.measure_packs("resnet20", settings, 1e9, None, 50.0, measure=broken)
    assert (failed.K, failed.status, failed.images_per_s) == (1, "failed", None)


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


def _fake_convs(monkeypatch) -> None:
    """ensemble.conv_microbench without timing anything: grouped 2 ms, dense 1 ms."""
    from benchmarks import ensemble

    monkeypatch.setattr(ensemble, "conv_microbench", lambda shape, device, reps: dict(
        shape, grouped_s=2e-3, dense_s=1e-3, grouped_over_dense=2.0, grouped_tflops=1.0,
        dense_tflops=2.0))


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
            seen.append((name, args[1] if name in ("harness", "vmap") else 1, rows_on_disk()))
            return rate
        return fake

    monkeypatch.setattr(bench, "naive_images_per_s", measure("naive", 10.0))
    monkeypatch.setattr(bench, "strong_images_per_s", measure("strong", 20.0))
    monkeypatch.setattr(bench, "harness_images_per_s", measure("harness", 30.0))
    monkeypatch.setattr(bench, "vmap_images_per_s", measure("vmap", 15.0))
    _fake_convs(monkeypatch)
    report = bench.run_bench(bench.parse_args(["--device", "cpu", "--packs", "1", "2", "4",
                                               "--out", str(tmp_path)]))
    assert [(name, k, len(rows)) for name, k, rows in seen] == [
        ("naive", 1, 0), ("strong", 1, 1), ("harness", 1, 5), ("harness", 2, 6),
        ("harness", 4, 7), ("vmap", 1, 8), ("vmap", 2, 9), ("vmap", 4, 10)]
    assert seen[-1][2] == [("naive", 1), ("strong:eager", 1), ("strong:compile", 1),
                           ("strong:cudagraphs", 1), ("strong", 1), ("harness", 1),
                           ("harness", 2), ("harness", 4), ("vmap", 1), ("vmap", 2)]
    assert rows_on_disk() == [(r["method"], r["K"]) for r in report["results"]]
    assert [r["ratio_vs_strong"] for r in report["results"]] == [
        0.5, 1.0, None, None, 1.0, 1.5, 1.5, 1.5, 0.75, 0.75, 0.75]
    on_disk = json.loads((tmp_path / "cpu.json").read_text())
    assert len(on_disk["conv_microbench"]) == 5 and on_disk["summary"] == report["summary"]


def test_strongest_single_loop_is_the_best_configuration_that_ran(monkeypatch):
    """The strong row is the max over the strong:* configurations that ran and names it; one
    that does not apply here is skipped with its reason, one that raises is a failed row with
    one line, and torch._dynamo is reset before each configuration."""
    rates = {"eager": 100.0, "compile": 250.0}
    resets = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))

    def strong(model: str, s: bench.Settings, config: str = "eager") -> float:
        torch._dynamo.reset()
        if isinstance(rates[config], Exception):
            raise rates[config]
        return rates[config]

    monkeypatch.setattr(bench, "strong_images_per_s", strong)
    settings = bench.parse_args(["--device", "cpu", "--compile"])
    rows: list[bench.Result] = []
    best = bench.measure_strong("resnet20", settings, 1e9, None, rows.append)
    assert best == 250.0 and len(resets) == 2
    assert [(r.method, r.status, r.images_per_s) for r in rows] == [
        ("strong:eager", "ok", 100.0), ("strong:compile", "ok", 250.0),
        ("strong:cudagraphs", "skipped", None), ("strong", "ok", 250.0)]
    assert rows[2].note == "CUDA graphs need a CUDA device"
    assert rows[3].note == "best of eager, compile, cudagraphs: strong:compile"

    rates["compile"] = RuntimeError("BackendCompilerFailed: inductor raised\nthe traceback")
    rows.clear()
    assert bench.measure_strong("resnet20", settings, 1e9, None, rows.append) == 100.0
    assert [(r.method, r.status, r.note) for r in rows] == [
        ("strong:eager", "ok", None),
        ("strong:compile", "failed", "RuntimeError: BackendCompilerFailed: inductor raised"),
        ("strong:cudagraphs", "skipped", "CUDA graphs need a CUDA device"),
        ("strong", "ok", "best of eager, compile, cudagraphs: strong:eager")]
    without = bench.parse_args(["--device", "cpu"])  # a CPU compiles only with --compile
    assert bench.strong_skip_reason("compile", without) == \
        "torch.compile on a CPU only with --compile"


def test_a_failing_configuration_is_a_failed_row_and_the_bench_goes_on(tmp_path, monkeypatch):
    """A compile error in harness+compile (or any error but running out of memory) is one
    failed row with the error's first line; larger K of that method are not tried, and the
    bench measures what comes after it and writes its summary."""
    from benchmarks import bench_summary

    def harness(model: str, packs: int, s: bench.Settings, mode: str = "false") -> float:
        if mode != "false":
            raise RuntimeError("torch._dynamo.exc.BackendCompilerFailed: backend='inductor'"
                               "\nC++ compile error")
        return 30.0 * packs

    monkeypatch.setattr(bench, "naive_images_per_s", lambda *a: 10.0)
    monkeypatch.setattr(bench, "strong_images_per_s", lambda *a: 20.0)
    monkeypatch.setattr(bench, "harness_images_per_s", harness)
    monkeypatch.setattr(bench, "vmap_images_per_s", lambda m, k, s: 15.0 * k)
    monkeypatch.setattr(bench_summary, "study_size", lambda study: (336, 504_000_000,
                                                                    "resnet20"))
    _fake_convs(monkeypatch)
    report = bench.run_bench(bench.parse_args(["--device", "cpu", "--packs", "1", "2",
                                               "--compile", "--out", str(tmp_path)]))
    rows = [(r["method"], r["K"], r["status"]) for r in report["results"]]
    assert rows[-1] == ("harness+compile", 1, "failed")  # K = 2 not tried
    assert report["results"][-1]["note"] == (
        "RuntimeError: torch._dynamo.exc.BackendCompilerFailed: backend='inductor'")
    assert ("harness", 2, "ok") in rows and ("vmap", 2, "ok") in rows
    assert len(report["conv_microbench"]) == 5 and report["summary"]
    (line,) = [l for l in bench.format_table(report).splitlines() if "harness+compile" in l]
    assert re.search(r"\s1\s+FAILED\s.*  RuntimeError: torch._dynamo", line), line


def test_vmap_ensemble_trains_k_separate_models():
    """PyTorch's ensembling recipe as the bench runs it: on one fixed batch the K losses fall,
    the K models stay different, and after 5 steps every parameter and BN buffer equals that
    of the same model trained alone by torch.optim.SGD (fp32, within 1e-4)."""
    import copy

    from benchmarks import ensemble

    torch.manual_seed(0)
    models = [build_model("small").train() for _ in range(3)]
    alone = [copy.deepcopy(m) for m in models]
    optimizers = [torch.optim.SGD(m.parameters(), lr=bench.LR, momentum=bench.MOMENTUM,
                                  weight_decay=bench.WEIGHT_DECAY, foreach=True) for m in alone]
    ens = ensemble.VmapEnsemble(models, bench.LR, bench.MOMENTUM, bench.WEIGHT_DECAY)
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 10
    losses = []
    for _ in range(5):
        losses.append(ens.step(x, y))
        for model, optimizer in zip(alone, optimizers, strict=True):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    assert losses[0].shape == (3,) and bool((losses[-1] < losses[0]).all()), losses
    for k, model in enumerate(alone):
        mine = ens.model(k)
        theirs = dict(model.named_parameters()) | dict(model.named_buffers())
        assert mine.keys() == theirs.keys()
        for name, value in theirs.items():
            torch.testing.assert_close(mine[name], value.detach(), atol=1e-4, rtol=1e-4,
                                       msg=f"model {k} {name}")
    first = ens.params["0.weight"]
    assert not torch.allclose(first[0], first[1]) and not torch.allclose(first[1], first[2])


def test_gpu_hours_of_the_studies_from_planted_bench_rows():
    """fig2_decay (Shake-Shake 2x64d, 336 cells x 100 epochs x 50,000 images) and fig2_lite
    (ResNet-20, 336 x 30 x 50,000) at planted rates: on CUDA the best uncompiled harness row,
    in GPU-hours; on a CPU the K = 1 row, in CPU core-hours (x torch_threads). The targets
    read the best pack (K > 1) against the strong row."""
    from benchmarks import bench_summary

    def row(model, method, packs, rate, note=None):
        return {"model": model, "method": method, "K": packs, "status": "ok",
                "images_per_s": rate, "note": note}

    gpu = {"device": "NVIDIA H200", "settings": {"device": "cuda", "models": [
        "resnet20", "shake_shake_26_2x64d"]}, "torch_threads": 16,
        "roofline_images_per_s": {"resnet20": 840e3, "shake_shake_26_2x64d": 50e3},
        "results": [
            row("resnet20", "strong", 1, 40e3, "best of eager, compile, cudagraphs: "
                "strong:cudagraphs"),
            row("resnet20", "harness", 4, 100e3), row("resnet20", "harness", 16, 140e3),
            row("resnet20", "harness+compile", 16, 200e3), row("resnet20", "vmap", 16, 70e3),
            row("shake_shake_26_2x64d", "strong", 1, 30e3, "best of ...: strong:compile"),
            row("shake_shake_26_2x64d", "harness", 16, 36e3)]}
    assert bench_summary.study_size("fig2_lite") == (336, 504_000_000, "resnet20")
    assert bench_summary.study_size("fig2_decay") == (336, 1_680_000_000,
                                                      "shake_shake_26_2x64d")
    assert bench_summary.hours_lines(gpu) == [
        "fig2_decay: 336 cells, 1,680,000,000 images of shake_shake_26_2x64d / harness K=16 "
        "36,000 img/s = 13.0 GPU-hours on NVIDIA H200",  # 1.68e9 / 36e3 / 3600 = 12.96
        "fig2_lite: 336 cells, 504,000,000 images of resnet20 / harness K=16 140,000 img/s = "
        "1.0 GPU-hours on NVIDIA H200"]
    assert bench_summary.target_lines(gpu) == [
        "target packed resnet20 >= 3x its best single-model loop: 5.00x (harness+compile K=16 "
        "200,000 img/s / strong:cudagraphs 40,000 img/s): met",
        "target packed resnet20 >= 50% of the bandwidth roofline: 23.8% (harness+compile K=16 "
        "200,000 img/s / 840,000): NOT MET",
        "target packed shake_shake_26_2x64d >= 30,000 img/s: harness K=16 36,000 img/s: met",
        "target packed shake_shake_26_2x64d >= 1.3x its best single-model loop: 1.20x "
        "(harness K=16 36,000 img/s / strong:compile 30,000 img/s): NOT MET"]
    assert bench_summary.vmap_lines(gpu) == [
        "vmap resnet20 K=16: harness pack / vmap ensemble = 2.00x (harness K=16 140,000 img/s "
        "/ vmap K=16 70,000 img/s)"]
    cpu = dict(gpu, device="Intel(R) Xeon(R) Processor", torch_threads=2,
               settings={"device": "cpu", "models": ["resnet20"]},
               results=[row("resnet20", "harness", 1, 70.0), row("resnet20", "harness", 4,
                                                                 90.0)])
    assert bench_summary.hours_lines(cpu)[1] == (  # 504e6 / 70 / 3600 = 2,000 h on 2 threads
        "fig2_lite: 336 cells, 504,000,000 images of resnet20 / harness K=1 70 img/s = "
        "4,000 CPU core-hours (2,000 h x 2 threads on Intel(R) Xeon(R) Processor; "
        "not GPU-hours)")
    assert bench_summary.hours_lines(cpu)[0].endswith(
        "no ok harness K=1 row of shake_shake_26_2x64d measured; hours unknown")
