"""When a cell has diverged, and masking it out of its pack (harness.train.loop calls these).

The rule: a cell is `diverged` (a result, not a crash) as soon as any of

  - its training loss summed over the epoch so far,
  - the norm ||theta_k|| of its parameters (`packed.param_norms`, float32: a parameter that is
    inf or NaN, or weights so large that the norm overflows),
  - its test or validation loss, when the epoch is evaluated,

is not finite. The first two are read at the loop's check points only (every
DIVERGENCE_CHECK_EVERY steps and at every epoch's last step, before its record is made, so a
last step that blows the weights up is seen), in one host read; the step itself reads nothing
from the device. The third is read where the evaluation is read anyway. A cell so found is
masked out of its pack (`packed.mask_diverged`: the other cells go on, unchanged), its record of
that epoch says diverged, and it is never `completed`.
"""

from __future__ import annotations

import torch

from harness.train import packed
from harness.train.step import Run

DIVERGENCE_CHECK_EVERY = 20  # steps between host reads of the per-cell loss sums and norms


def check_training(run: Run, loss_sum: torch.Tensor) -> bool:
    """Mask every active cell whose summed training loss or parameter norm is no longer
    finite (one host read); True if any was."""
    finite = torch.isfinite(loss_sum) & torch.isfinite(packed.param_norms(run.model, run.packs))
    return _mask(run, ((~finite) & run.active).tolist())


def check_evaluation(run: Run, *losses: torch.Tensor | None) -> bool:
    """Mask every active cell whose evaluation loss (each a (K,) CPU tensor, None: not
    evaluated) is not finite; True if any was."""
    bad = [False] * run.packs
    for loss in losses:
        if loss is not None:
            bad = [b or not f for b, f in zip(bad, torch.isfinite(loss).tolist(), strict=True)]
    active = run.active.tolist()
    return _mask(run, [b and a for b, a in zip(bad, active, strict=True)])


def _mask(run: Run, newly: list[bool]) -> bool:
    for k, dead in enumerate(newly):
        if dead:
            run.active[k] = False
            if run.packs > 1:
                packed.mask_diverged(run.optimizer, run.model, k)
    return any(newly)
