"""Schedule multipliers eta_t (lr_t = alpha * eta_t) as functions of the step t (batch index).

Each schedule is a frozen, picklable callable `step -> eta_t` (the host's value, written to the
records). The optimizer gets it as optax's scale_by_schedule reads its count: `eta_table` lays
eta_0..eta_T out on the device once, the train step reads eta_t = table[t] there and passes it
to `ChainOptimizer.step(eta=...)` (harness.train.step: no host value per step). The same eta_t
scales the learning rate (lr_t = alpha * eta_t) and the decoupled weight decay.

    constant       eta_t = 1
    step           eta_t = factor ** (number of milestones m with t >= m * steps_per_epoch);
                   milestones in epochs (the paper: 30, 60, 80 of 100; configs/schedule/step.yaml)
    cosine         eta_t = 0.5 * (1 + cos(pi * t / (epochs * steps_per_epoch))), every batch
    warm_restarts  SGDR: periods of t_0, t_0*t_mult, t_0*t_mult^2, ... epochs; restarts at
                   t_0, t_0*(1 + t_mult), ...; eta_t = 0.5 * (1 + cos(pi * t_cur / T_i)) per batch
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from harness.spec import schedule as schedule_spec


@dataclass(frozen=True)
class Constant:
    def __call__(self, step: int) -> float:
        return 1.0


@dataclass(frozen=True)
class StepDecay:
    """eta_t = factor ** (milestones passed); milestone_steps in batches."""

    milestone_steps: tuple[int, ...]
    factor: float

    def __call__(self, step: int) -> float:
        return self.factor ** sum(step >= m for m in self.milestone_steps)


@dataclass(frozen=True)
class Cosine:
    """eta_t = 0.5 * (1 + cos(pi * t / total_steps)), t clamped to total_steps."""

    total_steps: int

    def __call__(self, step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, self.total_steps) / self.total_steps))


@dataclass(frozen=True)
class WarmRestarts:
    """SGDR cosine with restarts; t_0 in epochs, periods grow by t_mult."""

    steps_per_epoch: int
    t_0: float
    t_mult: float

    def __call__(self, step: int) -> float:
        start, length = _period(step, self.t_0 * self.steps_per_epoch, self.t_mult)
        return 0.5 * (1.0 + math.cos(math.pi * (step - start) / length))


def lr_multiplier(
    name: str, steps_per_epoch: int, epochs: int, **kw: Any
) -> Callable[[int], float]:
    """The eta_t function `name` of the batch index; kw: the options harness.spec.schedule
    names for it, with no defaults (step: milestones in epochs, factor; warm_restarts: t_0 in
    epochs, t_mult), each checked there."""
    _check_int("steps_per_epoch", steps_per_epoch)
    _check_int("epochs", epochs)
    kw = schedule_spec.check(name, kw, epochs=epochs)  # the options of `name`, each in range
    if name == "constant":
        return Constant()
    if name == "cosine":
        return Cosine(steps_per_epoch * epochs)
    if name == "step":
        return StepDecay(tuple(round(m * steps_per_epoch) for m in kw["milestones"]),
                         float(kw["factor"]))
    return WarmRestarts(steps_per_epoch, kw["t_0"], kw["t_mult"])


def eta_table(multiplier: Callable[[int], float], total_steps: int) -> Tensor:
    """(total_steps + 1,) float64 [eta_0, ..., eta_T]: the schedule as a table, the exact
    values of `multiplier` (move it to the device once; index it with a device step count)."""
    _check_int("total_steps", total_steps)
    return torch.tensor([multiplier(t) for t in range(total_steps + 1)], dtype=torch.float64)


def restart_epochs(t_0: float, t_mult: float, epochs: float) -> tuple[float, ...]:
    """Epochs at which SGDR restarts before `epochs`: t_0, t_0*(1 + t_mult), ...
    (the paper's t_0=100, t_mult=2: 100, 300, 700, 1500)."""
    _check_restarts(t_0, t_mult)
    out: list[float] = []
    start, length = 0, t_0
    while start + length < epochs:
        start, length = start + length, length * t_mult
        out.append(start)
    return tuple(out)


def current_period_epochs(epoch: float, t_0: float, t_mult: float) -> float:
    """Length T_i (epochs) of the SGDR period that contains `epoch` (the T of the current
    restart in normalized weight decay)."""
    _check_restarts(t_0, t_mult)
    if not (math.isfinite(epoch) and epoch >= 0):
        raise ValueError(f"epoch must be a finite number >= 0, got {epoch!r}")
    return _period(epoch, t_0, t_mult)[1]


def _period(t: float, t_0: float, t_mult: float) -> tuple[float, float]:
    """(start, length) of the period containing t; all in the same unit as t_0."""
    start, length = 0, t_0
    while t >= start + length:
        start, length = start + length, length * t_mult
    return start, length


def _check_int(name: str, value: Any) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_restarts(t_0: Any, t_mult: Any) -> None:
    schedule_spec.check("warm_restarts", {"t_0": t_0, "t_mult": t_mult})
