"""Train K cells of a grid at once as one packed network (`build_model(..., packs=K)`).

All K cells see the same batches; cell k owns the slice k of K equal slices along dim 0 of every
parameter, buffer and optimizer moment (p.view(K, -1)[k] for a contiguous p; dim 0 is the
outermost in channels_last too), so its lr and weight_decay are entry k of the optimizer's
per-model tensors (`harness.train.optim`). Per-model independence holds because grouped convs,
per-channel BatchNorm, the batched linear and the foreach optimizer ops never mix slices, and

    total = sum_{k active} mean_n CE(logits[n, k], y[n])

gives model k the gradient of its own loss only: K packed cells train like K solo runs.

A diverged cell (non-finite loss) is masked by `mask_diverged`: the optimizer counts its lr and
weight_decay as 0 (`ChainOptimizer.mask_cell`), its moments are zeroed now and the optimizer sets
its grads to 0 at every later step before reading them (`ChainOptimizer.mask_grads`, from a
device mask: no hook, so the same in a compiled step), so its update is exactly 0 and nothing of
it reaches the other slices.

How many cells fit on a device (`train.pack=auto`): harness.train.memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.train.models import build_model
from harness.train.optim import ChainOptimizer

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

    Moments are concatenated like parameters; lr becomes the K-vector of the cells' alphas
    (always a vector: a pack runs the per-cell arithmetic, whatever K), weight_decay the
    K-vector of their lambdas where cells differ."""
    groups = []
    for i, group in enumerate(states[0]["param_groups"]):
        solo = [s["param_groups"][i] for s in states]
        decays = [float(g["weight_decay"]) for g in solo]
        groups.append({**group, "lr": torch.tensor([g["lr"] for g in solo], dtype=torch.float64),
                       "weight_decay": (decays[0] if len(set(decays)) == 1
                                        else torch.tensor(decays, dtype=torch.float64))})
    state = {}
    for index, first in states[0]["state"].items():
        state[index] = {name: torch.cat([s["state"][index][name] for s in states], dim=0)
                        if isinstance(value, Tensor) and value.dim() > 0
                        else _shared_scalar(name, [s["state"][index][name] for s in states])
                        for name, value in first.items()}
    return {"state": state, "param_groups": groups}


def unpack_optimizer_state(packed: Mapping[str, Any], k: int, packs: int) -> dict[str, Any]:
    """Cell k's solo optimizer state_dict: entry k of the per-cell lr and weight_decay as
    floats, copies of its slice of every moment."""
    _check_index(k, packs)
    groups = [{**group, **{name: float(group[name][k]) if isinstance(group[name], Tensor)
                           else group[name] for name in ("lr", "weight_decay")}}
              for group in packed["param_groups"]]
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


def packed_loss(logits: Tensor, y: Tensor, active: Tensor) -> tuple[Tensor, Tensor]:
    """(total, per_model): per_model[k] = mean_n CE(logits[n, k], y[n]) (K,), total = the sum
    over active k (`active`: (K,) bool on the logits' device). Inactive models add exactly 0
    even when their loss is NaN (torch.where)."""
    per_model = per_model_cross_entropy(logits, y).mean(dim=0)
    return torch.where(active, per_model, torch.zeros_like(per_model)).sum(), per_model


def mask_diverged(optimizer: ChainOptimizer, model: nn.Module, k: int) -> None:
    """Make cell k inert from now on, the other cells unchanged.

    The optimizer counts its lr and weight_decay as 0, zeroes its slice of every moment (Adam's
    m and v, SGD's buffer: lr 0 times a NaN moment would still be NaN) and, at every later
    step, its slice of every gradient before the chain reads it (`ChainOptimizer.mask_grads`:
    its NaN activations make NaN grads even though its loss is left out); its current grads are
    zeroed here too. Its update is then exactly 0 (g_k = 0, m_k = v_k = 0, alpha_k = lambda_k =
    0): its params stay as they were, and since every op is per slice nothing of it reaches the
    other cells. The mask lives in the optimizer: call again after rebuilding it (resume)."""
    optimizer.mask_cell(k)  # checks k and that the optimizer is packed
    packs = optimizer.packs
    for p in model.parameters():
        if p.grad is not None:
            _part(p.grad, k, packs).zero_()  # an assignment, not a product: NaN becomes 0


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
        x = x.contiguous(memory_format=torch.channels_last)  # as the training step's
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
