"""The optimizers and their hyperparameters: names, types and ranges, free of torch.

An optimizer is two things: its YAML, `configs/optimizer/<name>.yaml` (its name, alpha and its
hyperparameters with their values), and its direction d(.) in
`harness.train.optim_steps.DIRECTIONS` (the math). Adding one is that file and that function;
the names below are read from the YAML files (a test checks they match DIRECTIONS), and each
hyperparameter's type and range is its entry in KINDS (a new name needs one line there).
`check` is the one check of a set of hyperparameters: `harness.config` validates a config
with it and `harness.train.optim` builds with it.

    optimizer  hyperparameters (torch.optim's names and meaning)
    adam       betas (beta1, beta2), eps: m, v EMAs of g, g^2; d = m_hat/(sqrt(v_hat) + eps)
    rmsprop    alpha (smoothing of v, not the lr), eps, momentum
    sgd        momentum mu, dampening, nesterov: b <- mu*b + (1 - dampening)*g
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.spec import configs
from harness.spec.values import Flag, Kind, Number, Numbers, SpecError, one_of, own_options

# name -> its hyperparameter keys: every key of configs/optimizer/<name>.yaml but name and lr
HYPERPARAMETERS: dict[str, tuple[str, ...]] = {
    spec["name"]: tuple(k for k in spec if k not in ("name", "lr"))
    for spec in configs.group("optimizer")}
OPTIMIZERS = tuple(HYPERPARAMETERS)

LR = Number(strict=True)          # alpha, the base learning rate: a number > 0
_UNIT = Number(high=1)            # [0, 1)
KINDS: dict[str, Kind] = {        # each hyperparameter's type and range, by its name
    "momentum": _UNIT,
    "dampening": _UNIT,
    "alpha": _UNIT,                # rmsprop's smoothing of v
    "eps": Number(strict=True),
    "betas": Numbers(_UNIT, length=2, hint="give two numbers in [0, 1)"),
    "nesterov": Flag(),
}


def check(name: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters of optimizer `name` (every key of its YAML but name and lr), each
    checked and normalized (floats, betas a tuple of two floats, nesterov a bool), in the
    YAML's order; an unknown name, an unknown or missing key, a value of the wrong type or
    range, or nesterov without momentum > 0 and dampening 0, is a SpecError (one line)."""
    one_of("optimizer", name, OPTIMIZERS)
    for key in HYPERPARAMETERS[name]:
        if key not in KINDS:
            raise SpecError(f"optimizer.{key} of optimizer={name} has no type and range; add "
                            "it to harness.spec.optimizer.KINDS")
    hyper = own_options("optimizer", name, given,
                        {key: KINDS[key] for key in HYPERPARAMETERS[name]})
    if hyper.get("nesterov") and (hyper["momentum"] <= 0 or hyper["dampening"] != 0):
        raise SpecError("optimizer.nesterov=true needs optimizer.momentum > 0 and "
                        "optimizer.dampening=0; or type optimizer.nesterov=false")
    return hyper
