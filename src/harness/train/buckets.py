"""Buckets: the params of one param group laid out for the multi-tensor step of
`harness.train.optim` (the values a chain step of `harness.train.optim_steps` reads).

A bucket holds the params of a group that have a gradient and share device, dtype and step
count, their optimizer states, and one step count t shared by all of them: a float64 (1,)
tensor on the params' device (`Bucket.counter`, the one a step adds 1 to), each param's
state["step"] a 0-dim view of it (torch.optim's form, for state_dicts). The step itself reads
t as counter.view(()) made inside it: torch 2.11's compiled step drops in-place updates of a
0-dim float64 CPU tensor it is given (measured: Adam's t stayed 1), not those of a (1,) one.
Per-cell values (packed models: alpha and lambda as K-vectors, cell k owning p[k*n:(k+1)*n]
along dim 0) are laid out once per bucket as one tensor of each parameter's shape, dtype and
device, so that foreach kernels take them elementwise; the optimizer builds its buckets again
only when a value changes (a new lambda, a param gaining a gradient), never in the steady
state. A masked cell is laid out again in place (`Bucket.remask`): the tensors a compiled step
reads stay the same objects, so masking a cell builds no new graph.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from harness.train.optim_steps import Coef


class Bucket:
    """Params of one group sharing device, dtype and step count, with their per-cell values
    laid out once; implements optim_steps.Values."""

    def __init__(self, params: list[Tensor], states: list[dict[str, Any]], step: Tensor,
                 lr: Coef, weight_decay: Coef, cell_values: dict[str, Tensor]) -> None:
        self.params, self.states = params, states
        self.counter = step._base if _is_counter_view(step) else step.reshape(1).clone()
        self.lr, self.weight_decay = lr, weight_decay  # alpha and lambda, fixed per layout
        self.cell_values = cell_values  # name -> (K,) float64 CPU vector, mask applied
        self.dead: Tensor | None = None  # a pack's (K,) bool device mask of masked cells
        self.scalars: dict[str, Tensor] = {}
        self._laid: dict[tuple[str, ...], list[Tensor]] = {}

    @property
    def step(self) -> Tensor:
        """t, a 0-dim view of `counter` (made anew at each access: see the module docstring)."""
        return self.counter.view(())

    def cells(self, names: tuple[str, ...]) -> list[Tensor]:
        if names not in self._laid:
            self._laid[names] = [_lay_out(self._product(names), p) for p in self.params]
        return self._laid[names]

    def remask(self, values: dict[str, Tensor]) -> None:
        """Take `values` (`cell_values` with a new mask: the same names) into this bucket in
        place, its laid-out tensors included (one copy to the device each, here, not in a
        step)."""
        if set(values) != set(self.cell_values):
            raise ValueError(f"remask got values {sorted(values)}; valid: "
                             f"{sorted(self.cell_values)} (build the buckets again instead)")
        for name, vector in values.items():
            self.cell_values[name].copy_(vector)
        for names, laid in self._laid.items():
            vector = self._product(names)
            for tensor, p in zip(laid, self.params, strict=True):
                tensor.copy_(_lay_out(vector, p))

    def _product(self, names: tuple[str, ...]) -> Tensor:
        vector = self.cell_values[names[0]]
        for name in names[1:]:
            vector = vector * self.cell_values[name]
        return vector

    def scalar(self, names: tuple[str, ...]) -> Tensor:
        out = self.scalars[names[0]]
        for name in names[1:]:
            out = out * self.scalars[name]
        return out


def build_buckets(group: dict[str, Any], state: dict[Tensor, dict[str, Any]],
                  present: list[bool], decayed: bool, packs: int,
                  mask: Tensor | None) -> list[Bucket]:
    """The buckets of `group`'s params with a gradient (`present`): grouped by (device, dtype,
    step count), one shared step tensor per bucket (the only place that reads a step count
    back from the device). `decayed`: lambda is not 0 under a decay mode other than none;
    `packs`, `mask`: K and the (K,) bool mask of cells still training (None: all)."""
    values = cell_values(group, packs, mask)
    lr = Coef(cells=("lr",)) if values else Coef(float(group["lr"]))
    weight_decay = (Coef(0.0) if not decayed else Coef(cells=("weight_decay",)) if values
                    else Coef(float(group["weight_decay"])))
    with_grad = [p for p, has in zip(group["params"], present, strict=True) if has]
    counters = {id(c): c for c in (state[p].get("step") for p in with_grad)
                if isinstance(c, Tensor)}
    for p, has in zip(group["params"], present, strict=True):
        step = state[p].get("step") if p in state else None
        if not has and isinstance(step, Tensor) and id(step) in counters:
            state[p]["step"] = step.clone()  # a param without grad stops counting
    by_key: dict[tuple, list[Tensor]] = {}
    for p in with_grad:
        step = state[p].get("step", 0)
        # one shared counter: keep it, reading nothing; several (a loaded state): read
        # their values once and merge equal ones
        count = id(step) if len(counters) == 1 and isinstance(step, Tensor) else float(step)
        by_key.setdefault((p.device, p.dtype, count), []).append(p)
    buckets = []
    for (device, _, count), params in by_key.items():
        shared = (counters[count] if isinstance(count, int) else
                  torch.tensor(count, dtype=torch.float64, device=device))
        states = [state[p] for p in params]
        bucket = Bucket(params, states, shared, lr, weight_decay, values)
        shared = shared if _is_counter_view(shared) else bucket.counter.view(())
        for s in states:
            s["step"] = shared
        buckets.append(bucket)
    return buckets


def _is_counter_view(step: Tensor) -> bool:
    """True when `step` is already a bucket's state["step"]: a 0-dim view of a (1,) counter."""
    return step.dim() == 0 and step._base is not None and step._base.shape == (1,)


def cell_values(group: dict[str, Any], packs: int, mask: Tensor | None) -> dict[str, Tensor]:
    """(K,) float64 CPU vectors of alpha ("lr") and lambda ("weight_decay"), zero for masked
    cells; {} when both are floats and no cell is masked (K = 1 given as 1-element tensors
    takes the per-cell path, whose arithmetic is then the same as a pack's)."""
    per_cell = [v for v in (group["lr"], group["weight_decay"]) if isinstance(v, Tensor)]
    if not per_cell and mask is None:
        return {}
    out = {}
    for name in ("lr", "weight_decay"):
        vector = torch.as_tensor(group[name], dtype=torch.float64).expand(packs)
        out[name] = vector * mask if mask is not None else vector.clone()
    return out


def is_zero(value: float | Tensor) -> bool:
    """True when a float or every entry of a per-cell tensor is 0 (e.g. an excluded group)."""
    return bool((torch.as_tensor(value) == 0).all())


def _lay_out(vector: Tensor, p: Tensor) -> Tensor:
    """A (K,) per-cell vector as a tensor of p's shape, dtype, device and memory format whose
    slice k along dim 0 holds vector[k]: the coefficient foreach kernels take elementwise."""
    column = vector.to(p.dtype).repeat_interleave(p.shape[0] // vector.numel())
    column = column.view(-1, *([1] * (p.dim() - 1))).to(p.device)
    return torch.empty_like(p).copy_(column.expand_as(p))
