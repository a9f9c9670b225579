"""How many cells fit in one pack on a device (`train.pack=auto`).

The peak device memory of a training step is affine in the pack size K:

    peak(K) = fixed + K * per_model        (measured at K = 2 and K = 4 by probe steps)
    K_max   = floor((safety * free - fixed) / per_model)

`fixed` is what the cells share (the input batch, cuDNN workspace, allocator rounding),
`per_model` what each adds (params, grads, optimizer state, activations). Both probes run
grouped convs, as any real pack does (K = 1 is the solo model, with plain convs).
On a CPU packing loses to solo runs, so K is CPU_MAX_PACK there and nothing is probed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from harness.train.models import build_model
from harness.train.optim import build_optimizer
from harness.train.packed import packed_logits, packed_loss

CPU_MAX_PACK = 1  # on a CPU packing loses: resnet20, K=4, 2 threads: 1.45x the time of 4 solo
MEMORY_SAFETY = 0.85  # fraction of free memory a pack may plan to use (allocator slack, cuDNN)


@dataclass(frozen=True)
class StepShape:
    """What one training step of a cell looks like, for the memory probe."""

    model: str  # a registry key of harness.train.models
    num_classes: int
    in_channels: int
    image_size: int
    batch_size: int
    optimizer: str           # and its hyperparameters: the state it keeps
    hyper: tuple[tuple[str, Any], ...]
    amp: torch.dtype | None  # autocast dtype of the forward pass (None: fp32)


@dataclass(frozen=True)
class MemoryProbe:
    """Peak device memory of one training step: fixed_bytes + K * per_model_bytes."""

    fixed_bytes: int      # shared: the input batch, cuDNN workspace, allocator rounding
    per_model_bytes: int  # params + grads + optimizer state + activations of one model


def pack_size(free_bytes: int, probe: MemoryProbe, safety: float = MEMORY_SAFETY) -> int:
    """K_max = floor((safety * free - fixed) / per_model), at least 1."""
    budget = safety * free_bytes - probe.fixed_bytes
    return max(1, math.floor(budget / max(probe.per_model_bytes, 1)))


def probe_memory(shape: StepShape, device: torch.device) -> MemoryProbe:
    """Peak CUDA memory of training steps at K = 2 and K = 4 (grouped convs in both, as in
    any real pack): per_model = (peak(4) - peak(2)) / 2, fixed = peak(2) - 2 * per_model."""
    peak2, peak4 = (step_peak_bytes(shape, device, packs) for packs in (2, 4))
    per_model = max((peak4 - peak2) // 2, 1)
    return MemoryProbe(fixed_bytes=max(peak2 - 2 * per_model, 0), per_model_bytes=per_model)


def step_peak_bytes(shape: StepShape, device: torch.device, packs: int) -> int:
    """Peak CUDA bytes allocated by building a pack of `packs` models and taking two training
    steps (channels_last, autocast `shape.amp`), above what was allocated before."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    model = build_model(shape.model, shape.num_classes, shape.in_channels, shape.image_size,
                        packs=packs).to(device, memory_format=torch.channels_last)
    rates = torch.full((packs,), 1e-3)
    opt = build_optimizer(model.parameters(), shape.optimizer, "decoupled", rates, rates,
                          **dict(shape.hyper))
    eta = torch.ones((), dtype=torch.float64, device=device)
    size = (shape.batch_size, shape.in_channels, shape.image_size, shape.image_size)
    x = torch.randn(size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, shape.num_classes, (shape.batch_size,), device=device)
    active = torch.ones(packs, dtype=torch.bool, device=device)
    for _ in range(2):  # the second step holds the optimizer state too
        with torch.autocast(device.type, dtype=shape.amp, enabled=shape.amp is not None):
            total, _ = packed_loss(packed_logits(model, x), y, active)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step(eta=eta)
    peak = torch.cuda.max_memory_allocated(device) - base
    del model, opt, eta, x, y, total
    torch.cuda.empty_cache()
    return peak


def max_pack(shape: StepShape, device: torch.device | str, free_bytes: int | None = None) -> int:
    """How many cells to pack (train.pack=auto): CPU_MAX_PACK on a CPU; on CUDA
    pack_size(free, probe_memory(shape)), free = torch.cuda.mem_get_info() unless given.
    The caller caps it by the number of cells."""
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_MAX_PACK
    if free_bytes is None:
        torch.cuda.empty_cache()
        free_bytes = torch.cuda.mem_get_info(device)[0]
    return pack_size(free_bytes, probe_memory(shape, device))


def resolve_pack(pack: str | int, shape: StepShape, device: torch.device | str,
                 cells: int | None = None) -> int:
    """K for `train.pack`: the int itself, or for "auto" `max_pack` (1 on a CPU, the
    memory-probed K on CUDA); capped by the number of `cells` when given. What the scheduler
    (cells.py) trains with and what the plan (`run.plan=true`) should print."""
    k = max_pack(shape, device) if str(pack) == "auto" else int(pack)
    return max(1, min(k, cells)) if cells else k
