"""The four weight-decay modes of Loshchilov & Hutter (ICLR 2019) and lambda: free of torch.

alpha = optimizer.lr, eta_t = schedule multiplier, lambda = decay.weight_decay, theta_{t-1} = the
weights before the step. `harness.train.optim` places the one decay step of its chain by mode.

    decay mode     update
    none           no decay
    l2             g <- g + lambda * theta_{t-1}; the optimizer's moments see it
    decoupled      theta <- theta - eta_t * lambda * theta_{t-1}          (the paper's SGDW/AdamW)
    decoupled_lr   theta <- theta - alpha * eta_t * lambda * theta_{t-1}  (torch.optim.AdamW)

lambda (and lambda_norm, when decay.normalized) is a finite number >= 0: `check`.
"""

from __future__ import annotations

from typing import Any

from harness.spec.values import Number, one_of

DECAY_MODES = ("none", "l2", "decoupled", "decoupled_lr")
WEIGHT_DECAY = Number()   # lambda: a finite number >= 0


def check(mode: Any, weight_decay: Any, key: str = "decay.weight_decay") -> tuple[str, float]:
    """(mode, lambda as a float): mode one of DECAY_MODES, lambda a finite number >= 0, or a
    SpecError (one line); `key` names lambda in the message (e.g. lambda_norm)."""
    return one_of("decay", mode, DECAY_MODES), float(WEIGHT_DECAY.check(key, weight_decay))
