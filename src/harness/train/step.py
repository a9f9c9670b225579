"""One training step of K packed cells, all on the device, and the state it works on (`Run`).

    eta_t = etas[t]                         (a float64 device table: harness.train.schedules)
    loss  = sum_k active_k * mean_n CE(model(x)[n, k], y[n])   (autocast `run.amp`)
    loss.backward(); optimizer.step(eta=eta_t); t += 1

eta_t is read from the table at the device step count t and handed to the optimizer as a
0-dim device tensor (lr_t = alpha * eta_t; harness.train.optim): the step reads no host value
and copies nothing to the device, so the whole step (forward, backward, optimizer) compiles
into one graph (harness.train.loop decides when to run it compiled).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from harness.config.job import Config
from harness.train import data as data_mod
from harness.train import packed
from harness.train.optim import ChainOptimizer


@dataclass
class Run:
    """Everything a training run of K cells holds between steps."""

    cells: Sequence[Config]
    ds: data_mod.Dataset
    device: torch.device
    model: torch.nn.Module
    optimizer: ChainOptimizer
    scaler: torch.amp.GradScaler
    generator: torch.Generator
    amp: torch.dtype | None
    multiplier: Callable[[int], float]  # eta_t of the host (records)
    etas: torch.Tensor                  # the same eta_t, a float64 table on the device
    count: torch.Tensor                 # (1,) int64 step count t on the device
    active: torch.Tensor                # (K,) bool on the device: cells still training
    step: int                           # the host's step count (equal to count)
    start_epoch: int
    started: float                      # perf_counter of the cell's start (resume included)
    compiled: Callable | None = None    # the compiled train step, when train.compile
    compile_s: float = 0.0

    @property
    def cfg(self) -> Config:
        return self.cells[0]

    @property
    def packs(self) -> int:
        return len(self.cells)


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor,
               apply: Callable[[torch.Tensor], None] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch: eta_t from the device table, forward, backward, optimizer step, t += 1.
    Returns the (K,) per-cell mean loss and (K,) error counts, on the device. `apply`: the
    optimizer half to call with eta_t instead of step() (a compiled step: `apply_prepared`)."""
    eta = run.etas.index_select(0, run.count).view(())
    with torch.autocast(run.device.type, dtype=run.amp, enabled=run.amp is not None):
        logits = packed.packed_logits(run.model, x)
    total, per_cell = packed.packed_loss(logits, y, run.active)
    if apply is not None:
        total.backward()
        apply(eta)
    elif run.scaler.is_enabled():
        run.scaler.scale(total).backward()
        run.optimizer.prepare()
        run.optimizer.mask_grads()  # before the scaler's inf check: a dead cell's are NaN
        run.scaler.step(run.optimizer, eta=eta)
        run.scaler.update()
    else:
        total.backward()
        run.optimizer.step(eta=eta)
    run.count.add_(1)
    return per_cell.detach(), packed.error_counts(logits.detach(), y)
