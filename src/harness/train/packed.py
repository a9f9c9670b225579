"""Train K cells of a grid at once as one packed network (`build_model(..., packs=K)`).

All K cells see the same batches; cell k owns the slice k of K equal slices along dim 0 of every
parameter, buffer and optimizer moment (p.view(K, -1)[k] for a contiguous p; dim 0 is the
outermost in channels_last too), so its lr and weight_decay are entry k of the optimizer's
per-model tensors (`harness.train.optim`). Per-model independence holds because grouped convs,
per-channel BatchNorm, the batched linear and the foreach optimizer ops never mix slices, and

    total = sum_{k active} mean_n CE(logits[n, k], y[n])

gives model k the gradient of its own loss only: K packed cells train like K solo runs.

A diverged cell (non-finite loss) is masked by `mask_diverged`: the optimizer counts its lr and
weight_decay as 0 (`ChainOptimizer.mask_cell`), its grads and moments are zeroed now and its
grads at every later backward (one hook per parameter reading a device mask of dead cells), so
its update is exactly 0 and nothing of it reaches the other slices.

`max_pack` picks K from free device memory:
    peak(K) = fixed + K * per_model        (measured at K = 1 and K = 2 by a probe step)
    K_max   = floor((safety * free - fixed) / per_model)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.train.models import build_model
from harness.train.optim import ChainOptimizer, build_optimizer, group_lr_multiplier

CPU_MAX_PACK = 1  # on a CPU packing loses: resnet20, K=4, 2 threads: 1.45x the time of 4 solo
MEMORY_SAFETY = 0.85  # fraction of free memory a pack may plan to use (allocator slack, cuDNN)


# --- state dicts ------------------------------------------------------------------------------


def _shared_scalar(name: str, values: list[Any]) -> Any:
    """The one value all cells have for a scalar (a step count, num_batches_tracked); a tensor
    is copied (a live optimizer's step count must not be shared with the pack)."""
    if any(v != values[0] for v in values[1:]):
        raise ValueError(f"{name} differs between the cells ({values!r}); valid: equal values")
    return values[0].clone() if isinstance(values[0], Tensor) else values[0]


def pack_states(states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """K solo model state_dicts -> the packed model's: tensors concatenated along dim 0 (model
    k is p.view(K, -1)[k]); 0-dim buffers (BatchNorm's num_batches_tracked) must be equal."""
    if not states:
        raise ValueError("pack_states needs at least one state; valid: a list of K >= 1 states")
    return {key: _shared_scalar(key, [s[key] for s in states]) if first.dim() == 0
            else torch.cat([s[key].detach() for s in states], dim=0)
            for key, first in states[0].items()}


def build_packed_model(name: str, num_classes: int, in_channels: int, image_size: int,
                       states: Sequence[Mapping[str, Tensor]]) -> nn.Module:
    """The packed model of len(states) cells, starting from these solo state_dicts. Built on
    the meta device: it draws nothing from the RNG (a solo run's later draws stay the same)
    and spends no time on an initialisation that would be overwritten."""
    with torch.device("meta"):
        model = build_model(name, num_classes, in_channels, image_size, packs=len(states))
    model.load_state_dict(pack_states(states), assign=True)
    return model


def _part(t: Tensor, k: int, packs: int) -> Tensor:
    """Model k's slice of a packed tensor along dim 0 (a view, any memory format)."""
    n = t.shape[0] // packs
    return t.narrow(0, k * n, n)


def _slice(t: Tensor, k: int, packs: int) -> Tensor:
    """Model k's part of a packed tensor, a contiguous copy in the solo shape (a view would
    make torch.save write the whole packed storage)."""
    return _part(t.detach(), k, packs).clone(memory_format=torch.contiguous_format)


def unpack_state(packed_state: Mapping[str, Tensor], k: int, packs: int) -> dict[str, Tensor]:
    """Model k's solo state_dict (copies) out of a packed model's state_dict of `packs` models."""
    _check_index(k, packs)
    return {key: t.clone() if t.dim() == 0 else _slice(t, k, packs)
            for key, t in packed_state.items()}


def _check_index(k: int, packs: int) -> None:
    if not 0 <= k < packs:
        raise ValueError(f"model index k={k} is out of range; valid: 0 <= k < {packs}")


def pack_optimizer_states(states: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """K solo `ChainOptimizer.state_dict()`s (same param groups) -> the packed optimizer's.

    Moments are concatenated like parameters; cell_lr holds each cell's alpha (its initial
    lr), lr / initial_lr the schedule multiplier the cells share; weight_decay becomes a
    K-vector where cells differ."""
    groups = []
    for i, group in enumerate(states[0]["param_groups"]):
        solo = [s["param_groups"][i] for s in states]
        packed = dict(group)
        packed["cell_lr"] = torch.tensor([g["initial_lr"] for g in solo], dtype=torch.float64)
        packed["initial_lr"] = 1.0
        packed["lr"] = _eta([(g["lr"], g["initial_lr"]) for g in solo])
        decays = [float(g["weight_decay"]) for g in solo]
        packed["weight_decay"] = (decays[0] if len(set(decays)) == 1
                                  else torch.tensor(decays, dtype=torch.float64))
        groups.append(packed)
    state = {}
    for index, first in states[0]["state"].items():
        state[index] = {name: torch.cat([s["state"][index][name] for s in states], dim=0)
                        if isinstance(value, Tensor) and value.dim() > 0
                        else _shared_scalar(name, [s["state"][index][name] for s in states])
                        for name, value in first.items()}
    return {"state": state, "param_groups": groups}


def _eta(pairs: list[tuple[float, float]]) -> float:
    """The schedule multiplier lr / initial_lr the cells share (to 1e-9)."""
    etas = [lr / initial for lr, initial in pairs if initial] or [1.0]
    if max(etas) - min(etas) > 1e-9 * max(map(abs, etas)):
        raise ValueError(f"cells are at different schedule multipliers {etas}; valid: equal")
    return etas[0]


def unpack_optimizer_state(packed: Mapping[str, Any], k: int, packs: int) -> dict[str, Any]:
    """Cell k's solo optimizer state_dict (float lr / weight_decay, copies of its moments)."""
    _check_index(k, packs)
    groups = []
    for group in packed["param_groups"]:
        solo = {name: v for name, v in group.items() if name != "cell_lr"}
        if "cell_lr" in group:
            alpha = float(group["cell_lr"][k])
            solo["initial_lr"], solo["lr"] = alpha, alpha * group_lr_multiplier(group)
        decay = group["weight_decay"]
        solo["weight_decay"] = float(decay[k]) if isinstance(decay, Tensor) else decay
        groups.append(solo)
    state = {index: {name: (_slice(v, k, packs) if v.dim() > 0 else v.clone())
                     if isinstance(v, Tensor) else v for name, v in entry.items()}
             for index, entry in packed["state"].items()}
    return {"state": state, "param_groups": groups}


# --- loss, divergence -------------------------------------------------------------------------


def packed_logits(model: nn.Module, x: Tensor) -> Tensor:
    """Logits (N, K, C) of a packed model; a solo model's (N, C) as (N, 1, C)."""
    out = model(x)
    return out.unsqueeze(1) if out.dim() == 2 else out


def per_model_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """(N, K) cross-entropy of every image under every model, in float32 or wider."""
    n, k, _ = logits.shape
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits.transpose(1, 2), y[:, None].expand(n, k),
                           reduction="none")


def packed_loss(logits: Tensor, y: Tensor, active: Tensor,
                weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(total, per_model): per_model[k] = mean_n CE(logits[n, k], y[n]) (K,), total = the sum
    over active k (`active`: (K,) bool on the logits' device). Inactive models add exactly 0
    even when their loss is NaN (torch.where). `weight` (N,): per-image weights, 0 for the
    padding of a partial batch: per_model[k] = sum_n w_n CE_nk / sum_n w_n."""
    ce = per_model_cross_entropy(logits, y)
    if weight is None:
        per_model = ce.mean(dim=0)
    else:
        per_model = (ce * weight[:, None]).sum(dim=0) / weight.sum()
    return torch.where(active, per_model, torch.zeros_like(per_model)).sum(), per_model


def mask_diverged(optimizer: ChainOptimizer, model: nn.Module, k: int) -> None:
    """Make cell k inert from now on, the other cells unchanged.

    The optimizer counts its lr and weight_decay as 0 and zeroes its slice of every moment
    (Adam's m and v, SGD's buffer: lr 0 times a NaN moment would still be NaN); its grads are
    zeroed now and after every later backward by one hook per parameter that reads a device
    mask of dead cells (its NaN activations make NaN grads even though its loss is left out).
    Its update is then exactly 0: its params stay as they were (Adam/RMSprop with eps = 0
    would still give 0/0 there), and since every op is per slice nothing of it reaches the
    other cells. Call again after rebuilding the model or optimizer (resume)."""
    optimizer.mask_cell(k)  # checks k and that the optimizer is packed
    packs = optimizer.packs
    dead = _dead_cells(model, packs)
    dead[k] = True
    for p in model.parameters():
        if p.grad is not None:
            _part(p.grad, k, packs).zero_()  # an assignment, not a product: NaN becomes 0


def _dead_cells(model: nn.Module, packs: int) -> Tensor:
    """The model's (K,) bool device mask of masked cells; registers the grad hooks once."""
    dead = model.__dict__.get("_dead_cells")
    if dead is None:
        device = next(model.parameters()).device
        dead = torch.zeros(packs, dtype=torch.bool, device=device)
        model.__dict__["_dead_cells"] = dead
        for p in model.parameters():
            p.register_post_accumulate_grad_hook(_zero_dead_grads(dead, packs))
    return dead


def _zero_dead_grads(dead: Tensor, packs: int):
    def hook(p: Tensor) -> None:
        mask = dead.view(packs, *([1] * p.dim()))
        p.grad.unflatten(0, (packs, -1)).masked_fill_(mask, 0.0)
    return hook


# --- per-model metrics ------------------------------------------------------------------------


def error_counts(logits: Tensor, y: Tensor, topk: int = 1) -> Tensor:
    """(K,) number of images whose label is not among model k's `topk` highest logits."""
    top = logits.topk(min(topk, logits.shape[-1]), dim=-1).indices  # (N, K, topk)
    return (top != y[:, None, None]).all(dim=-1).sum(dim=0)


@dataclass(frozen=True)
class PackedEval:
    """Per-model test metrics, each a (K,) float64 tensor on the CPU; errors are fractions."""

    loss: Tensor
    error: Tensor
    error_top5: Tensor


@torch.no_grad()
def evaluate_packed(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]],
                    amp: torch.dtype | None = None) -> PackedEval:
    """Mean test cross-entropy, top-1 and top-5 error of every packed model (eval mode;
    the model's train/eval mode is restored afterwards). One device sync, at the end."""
    was_training = model.training
    model.eval()
    totals, n = None, 0
    for x, y in batches:
        with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
            logits = packed_logits(model, x).float()
        loss = per_model_cross_entropy(logits, y).sum(dim=0)
        sums = torch.stack([loss, error_counts(logits, y, 1), error_counts(logits, y, 5)])
        totals, n = (sums if totals is None else totals + sums), n + len(y)
    model.train(was_training)
    if totals is None:
        raise ValueError("evaluate_packed got no batches; valid: at least one (x, y) batch")
    return PackedEval(*(totals.to("cpu", torch.float64) / n).unbind(0))


def param_norms(model: nn.Module, packs: int) -> Tensor:
    """(K,) ||theta_k||_2 over all of model k's parameters, in float32."""
    squares = [p.detach().float().reshape(packs, -1).square().sum(dim=1)
               for p in model.parameters()]
    return torch.stack(squares).sum(dim=0).sqrt()


# --- how many models fit ----------------------------------------------------------------------


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
    size = (shape.batch_size, shape.in_channels, shape.image_size, shape.image_size)
    x = torch.randn(size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, shape.num_classes, (shape.batch_size,), device=device)
    active = torch.ones(packs, dtype=torch.bool, device=device)
    for _ in range(2):  # the second step holds the optimizer state too
        with torch.autocast(device.type, dtype=shape.amp, enabled=shape.amp is not None):
            total, _ = packed_loss(packed_logits(model, x), y, active)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    peak = torch.cuda.max_memory_allocated(device) - base
    del model, opt, x, y, total
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
