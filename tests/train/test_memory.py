"""harness.train.memory: how many cells fit in one pack (`train.pack=auto`)."""

from __future__ import annotations

import pytest
import torch

from harness.train.memory import (
    CPU_MAX_PACK,
    MemoryProbe,
    StepShape,
    max_pack,
    pack_size,
    resolve_pack,
    step_peak_bytes,
)
from tests.conftest import hyper


def test_pack_size_formula() -> None:
    probe = MemoryProbe(fixed_bytes=2_000, per_model_bytes=1_000)
    assert pack_size(10_000, probe, safety=0.8) == 6  # (8000 - 2000) / 1000
    assert pack_size(1_000, probe, safety=0.8) == 1  # never below one
    shape = StepShape("resnet20", 10, 3, 32, 128, "adam", tuple(hyper("adam").items()), None)
    assert max_pack(shape, "cpu") == CPU_MAX_PACK
    assert resolve_pack("auto", shape, "cpu", cells=64) == CPU_MAX_PACK
    assert resolve_pack("16", shape, "cpu", cells=4) == 4 and resolve_pack(8, shape, "cpu") == 8


def test_the_probe_trains_two_steps(monkeypatch) -> None:
    """The probe's steps (packed model, optimizer with eta_t on the device) run; on a CPU,
    with the CUDA memory counters stubbed out, they allocate no CUDA byte."""
    for name in ("empty_cache", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda *args: None)
    for name in ("memory_allocated", "max_memory_allocated"):
        monkeypatch.setattr(torch.cuda, name, lambda *args: 0)
    shape = StepShape("small", 10, 3, 8, 4, "adam", tuple(hyper("adam").items()), None)
    assert step_peak_bytes(shape, torch.device("cpu"), 2) == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_max_pack_fits_on_the_gpu() -> None:
    """A pack of the estimated size really trains within the memory it was given: 4 GiB (or
    less when less is free), so the pack stays small enough to step in seconds (the whole of
    an H200 would be K near 1,100)."""
    device = torch.device("cuda")
    torch.cuda.empty_cache()
    budget = min(torch.cuda.mem_get_info(device)[0], 4 << 30)
    shape = StepShape("resnet20", 10, 3, 32, 128, "adam", tuple(hyper("adam").items()),
                      torch.bfloat16)
    k = max_pack(shape, device, free_bytes=budget)
    assert k >= 4
    assert step_peak_bytes(shape, device, k) <= budget
