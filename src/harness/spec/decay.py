"""The four weight-decay modes of Loshchilov & Hutter (ICLR 2019) and lambda: free of torch.

alpha = optimizer.lr, eta_t = schedule multiplier, lambda = decay.weight_decay, theta_{t-1} = the
weights before the step. `harness.train.optim` places the one decay step of its chain by mode.

    decay mode     update
    none           no decay
    l2             g <- g + lambda * theta_{t-1}; the optimizer's moments see it
    decoupled      theta <- theta - eta_t * lambda * theta_{t-1}          (the paper's SGDW/AdamW)
    decoupled_lr   theta <- theta - alpha * eta_t * lambda * theta_{t-1}  (torch.optim.AdamW)

lambda (and lambda_norm, when decay.normalized) is a finite number >= 0: `check`.

`decay.exclude` lists what is not decayed (the paper: nothing): each entry a kind of parameter
of EXCLUDE_KINDS, found by module type in any model (`harness.train.optim.param_groups`), or an
fnmatch pattern of parameter names (it has '.', '*', '?' or '['); a bare word that is no kind
is a typo: `check_exclude`. An entry that matches no parameter of the model is an error too,
found where the model is known (before any cell: harness.cli.run).
"""

from __future__ import annotations

from typing import Any

from harness.spec.values import Number, SpecError, as_list, one_of

DECAY_MODES = ("none", "l2", "decoupled", "decoupled_lr")
WEIGHT_DECAY = Number()   # lambda: a finite number >= 0
EXCLUDE_KINDS = {  # decay.exclude: kinds of parameter, whatever their names
    "norm": "every parameter of a normalization layer (BatchNorm, GroupNorm, LayerNorm, ...)",
    "bias": "every bias of any layer (a module's `bias` parameter)",
}
_PATTERN_CHARS = ".*?["  # an entry with one of these is an fnmatch pattern of parameter names


def check(mode: Any, weight_decay: Any, key: str = "decay.weight_decay") -> tuple[str, float]:
    """(mode, lambda as a float): mode one of DECAY_MODES, lambda a finite number >= 0, or a
    SpecError (one line); `key` names lambda in the message (e.g. lambda_norm)."""
    return one_of("decay", mode, DECAY_MODES), float(WEIGHT_DECAY.check(key, weight_decay))


def is_kind(entry: str) -> bool:
    """A decay.exclude entry names a kind (a bare word), not a pattern of parameter names."""
    return not any(c in entry for c in _PATTERN_CHARS)


def check_exclude(exclude: Any, key: str = "decay.exclude") -> tuple[str, ...]:
    """decay.exclude as a tuple of strings: each a kind of EXCLUDE_KINDS or an fnmatch pattern
    of parameter names (with '.', '*', '?' or '['), or a SpecError (one line)."""
    entries = tuple(as_list(exclude if exclude is not None else ()))
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            raise SpecError(f"{key}: {entry!r} is not valid; give kinds "
                            f"({', '.join(EXCLUDE_KINDS)}) or fnmatch patterns of parameter names")
        if is_kind(entry) and entry not in EXCLUDE_KINDS:
            raise SpecError(f"{key}: {entry!r} is not a kind; kinds: "
                            f"{', '.join(EXCLUDE_KINDS)} (a pattern of parameter names has "
                            "'.', '*', '?' or '[', e.g. '*.bias')")
    return entries
