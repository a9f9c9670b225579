"""The schedules of eta_t, the options each takes, and their types and ranges: free of torch.

Their values live only in `configs/schedule/<name>.yaml`; `harness.train.schedules` computes
eta_t (the formulas are in its docstring). `check` is the one check of a schedule's options:
`harness.config` validates a config with it and `harness.train.schedules` builds with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.spec.values import Kind, Number, Numbers, SpecError, one_of, own_options

SCHEDULES = ("constant", "step", "cosine", "warm_restarts")
OPTIONS: dict[str, tuple[str, ...]] = {
    "constant": (),
    "step": ("milestones", "factor"),        # epochs of each drop; eta_t *= factor at each
    "cosine": (),
    "warm_restarts": ("t_0", "t_mult"),      # first period in epochs; growth of each period
}
_EPOCHS = Number(low=1, integer=True)
KINDS: dict[str, Kind] = {                  # each option's type and range, by its name
    "milestones": Numbers(_EPOCHS, increasing=True,
                          hint="give increasing epochs, e.g. {key}=[30,60,80]"),
    "factor": Number(strict=True, high=1, closed=True),   # (0, 1]
    "t_0": _EPOCHS,
    "t_mult": _EPOCHS,
}


def check(name: Any, given: Mapping[str, Any], epochs: int | None = None) -> dict[str, Any]:
    """The options of schedule `name` (OPTIONS[name]), each checked and normalized (milestones
    a tuple of strictly increasing ints >= 1, factor a float in (0, 1], t_0 and t_mult ints
    >= 1), in OPTIONS' order; with `epochs` (train.epochs) also every milestone inside the run,
    0 < m < epochs. An unknown name, an unknown or missing key, or a bad value is a SpecError
    (one line)."""
    one_of("schedule", name, SCHEDULES)
    options = own_options("schedule", name, given, {k: KINDS[k] for k in OPTIONS[name]})
    if epochs is not None and "milestones" in options:
        _within_run(options["milestones"], epochs)
    return options


def _within_run(milestones: tuple[int, ...], epochs: int) -> None:
    """0 < m < epochs for each milestone (a drop at the last epoch or later never happens);
    the message suggests the milestones scaled to the run."""
    if all(0 < m < epochs for m in milestones):
        return
    fit = sorted({min(epochs - 1, max(1, round(m * epochs / max(milestones))))
                  for m in milestones})
    hint = (f"e.g. schedule.milestones=[{','.join(map(str, fit))}]" if epochs > 1
            else "or schedule=constant")
    raise SpecError(f"schedule.milestones={list(milestones)} has epochs outside the run "
                    f"(train.epochs={epochs}); give milestones in 1..{epochs - 1}, {hint}")
