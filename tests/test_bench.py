"""`python -m harness bench`: the real CLI on a CPU, FLOP counting, the CLI's errors."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from benchmarks import throughput as bench

from tests.conftest import ROOT, harness_cli


def test_cli_quick_writes_json_and_prints_table(tmp_path):
    result = harness_cli(["bench", "--quick", "--device", "cpu", "--out", str(tmp_path)],
                         cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "cpu.json").read_text())
    assert report["device_slug"] == "cpu" and report["device"]
    assert report["torch_version"] == torch.__version__
    assert report["settings"] == {"models": ["resnet20"], "packs": [1, 2], "steps": 2,
                                  "warmup": 1, "batch_size": 16, "device": "cpu",
                                  "compile": False}
    assert report["flops_per_image"]["resnet20"]["training"] == 242_421_504
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


def test_resnet20_flops_per_image():
    """Convention (FlopCounterMode's): a multiply-add is 2 FLOPs; only convs and matmuls count.
    ResNet-20 is known as ~40.8M multiply-adds forward per 32x32 image, ~81.6 MFLOPs here; the
    backward is about twice the forward (the first conv's input gradient is not needed)."""
    flops = bench.count_flops("resnet20")
    assert flops.forward == 81_102_080  # 40.55M multiply-adds
    assert abs(flops.forward / 81.6e6 - 1) < 0.2
    assert flops.training == 242_421_504  # forward + backward
    assert abs(flops.training / (3 * 81.6e6) - 1) < 0.2
    assert flops.training / flops.forward == pytest.approx(2.989, abs=1e-3)
    assert bench.count_flops("resnet20", batch=3) == flops  # per image: batch does not matter


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H200", 989e12), ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA A100-SXM4-80GB", 312e12), ("Tesla V100-SXM2-16GB", None)])
def test_peak_flops_by_device_name(name, peak):
    assert bench.peak_flops(name) == peak


@pytest.mark.parametrize("name, model, images", [
    ("NVIDIA H100 80GB HBM3", "resnet20", 630e3), ("NVIDIA H200", "shake_shake_26_2x64d", 50e3),
    ("NVIDIA H200", "resnet20", 840e3), ("NVIDIA A100-SXM4-80GB", "resnet20", None)])
def test_roofline_constants(name, model, images):
    assert bench.roofline(name, model) == images


def test_device_slug():
    assert bench.device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert bench.device_slug("NVIDIA A100-SXM4-80GB") == "nvidia-a100-sxm4-80gb"


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
