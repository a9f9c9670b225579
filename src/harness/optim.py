"""SGD, Adam and RMSprop with the four weight-decay modes of Loshchilov & Hutter (ICLR 2019).

Notation: alpha = base learning rate (`lr`), eta_t = schedule multiplier = current lr / initial
lr of the param group (so any torch LR scheduler drives it), lambda = `weight_decay`,
theta_{t-1} = the weights before the step, d(.) = the optimizer's direction (SGD's momentum
buffer, Adam's m_hat / (sqrt(v_hat) + eps), RMSprop's g / (sqrt(v) + eps)); the moments inside
d are updated from whatever d is given.

Every optimizer is the chain [d, scale_by_lr, scale_by_schedule] of `harness.optim_steps`; a
decay mode is only where the one `add_decayed_weights` step (wd) sits in it (theta on the
right-hand side is theta_{t-1}):

    none          [d, lr, sched]      theta <- theta - eta_t*alpha*d(g)
    l2            [wd, d, lr, sched]  theta <- theta - eta_t*alpha*d(g + lambda*theta)
    decoupled_lr  [d, wd, lr, sched]  theta <- theta - eta_t*alpha*(d(g) + lambda*theta)
    decoupled     [d, lr, wd, sched]  theta <- theta - eta_t*(alpha*d(g) + lambda*theta)

`l2` equals torch.optim.SGD/Adam/RMSprop(weight_decay=lambda); `decoupled_lr` equals
torch.optim.AdamW; `decoupled` is the paper's SGDW / AdamW (Alg. 1 line 9, Alg. 2 line 12):
the decay is multiplied by eta_t but NOT by alpha, which makes the best lambda independent of
alpha. SGD momentum follows torch.optim.SGD (b <- mu*b + g, then times eta_t*alpha); the
paper's Alg. 1 puts eta_t*alpha inside the buffer (m <- mu*m + eta_t*alpha*g).

Packed models: `lr` and `weight_decay` may be 1-D tensors of length K, one value per packed
model, where model k's part of every parameter p is p.view(K, -1)[k] (the leading dim of p is
divisible by K). A tensor `lr` is stored in group["lr"] as a `PerModel`, because torch LR
schedulers write a tensor lr with `fill_` (one value for all models).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Any

import torch
from torch import Tensor

from harness.optim_steps import (
    DIRECTIONS,
    Coef,
    Step,
    StepContext,
    Updates,
    add_decayed_weights,
    apply_updates,
    scale_by_lr,
    scale_by_schedule,
)

OPTIMIZERS = ("sgd", "adam", "rmsprop")
DECAY_MODES = ("none", "l2", "decoupled", "decoupled_lr")
HYPER_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {"momentum": 0.9, "dampening": 0.0, "nesterov": False},
    "adam": {"betas": (0.9, 0.999), "eps": 1e-8},
    # alpha: torch's name for RMSprop's squared-gradient averaging constant, not the lr
    "rmsprop": {"alpha": 0.99, "eps": 1e-8, "momentum": 0.0},
}


def make_chain(optimizer: str, decay: str) -> tuple[Step, ...]:
    """The steps of one optimizer update; the decay mode only moves `wd` along the chain."""
    _check_choice("optimizer", optimizer, OPTIMIZERS)
    _check_choice("decay", decay, DECAY_MODES)
    d, wd = DIRECTIONS[optimizer], add_decayed_weights
    lr, sched = scale_by_lr, scale_by_schedule
    chains = {
        "none": (d, lr, sched),
        "l2": (wd, d, lr, sched),
        "decoupled_lr": (d, wd, lr, sched),
        "decoupled": (d, lr, wd, sched),
    }
    return chains[decay]


@dataclass(frozen=True, eq=False)
class PerModel:
    """A learning rate with one value per packed model: values * scale.

    Torch LR schedulers multiply it by floats (LambdaLR: initial_lr * eta_t), which changes
    only `scale`, so eta_t = lr.scale / initial_lr.scale even where a value is 0.
    """

    values: Tensor
    scale: float = 1.0

    def __mul__(self, factor: float) -> PerModel:
        return PerModel(self.values, self.scale * float(factor))

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> PerModel:
        return PerModel(self.values, self.scale / float(divisor))

    def tensor(self) -> Tensor:
        return self.values * self.scale


class ChainOptimizer(torch.optim.Optimizer):
    """One optimizer class for every (optimizer, decay) pair; see the module docstring.

    Param groups may set their own lr, weight_decay (e.g. 0 for excluded params) and hyper.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        optimizer: str,
        decay: str,
        lr: float | Tensor,
        weight_decay: float | Tensor,
        **hyper: Any,
    ) -> None:
        self.chain = make_chain(optimizer, decay)
        self.optimizer_name, self.decay = optimizer, decay
        unknown = sorted(set(hyper) - set(HYPER_DEFAULTS[optimizer]))
        if unknown:
            valid = ", ".join(HYPER_DEFAULTS[optimizer])
            raise ValueError(f"unknown {optimizer} hyperparameter {unknown[0]!r}; valid: {valid}")
        defaults = {"lr": _as_lr(lr), "weight_decay": _as_value("weight_decay", weight_decay)}
        defaults.update({**HYPER_DEFAULTS[optimizer], **hyper})
        _check_hyper(optimizer, defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group["lr"] = _as_lr(group["lr"])
        group["weight_decay"] = _as_value("weight_decay", group["weight_decay"])
        _check_hyper(self.optimizer_name, group)
        for name in ("lr", "weight_decay"):
            _check_packed(name, group[name], group["params"])
        group.setdefault("initial_lr", group["lr"])  # as torch schedulers do: alpha

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict[str, Any]) -> None:
        """Run the chain once per bucket of params that share step count, device and dtype."""
        alpha, eta = _lr_and_eta(group)
        buckets: dict[tuple[int, torch.device, torch.dtype], list[Tensor]] = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise ValueError("sparse gradients are not supported; valid: dense gradients")
            key = (self.state[p].get("step", 0) + 1, p.device, p.dtype)
            buckets.setdefault(key, []).append(p)
        for (step, _, _), params in buckets.items():
            states = [self.state[p] for p in params]
            for state in states:
                state["step"] = step
            ctx = StepContext(
                params=params,
                states=states,
                step=step,
                lr=_per_param(alpha, params),
                eta=eta,
                weight_decay=_per_param(group["weight_decay"], params),
                hyper=group,
            )
            updates = Updates([p.grad for p in params])
            for f in self.chain:
                updates = f(updates, ctx)
            apply_updates(updates, params)


def build_optimizer(
    params: Iterable[Tensor] | Iterable[dict[str, Any]],
    optimizer: str,
    decay: str,
    lr: float | Tensor,
    weight_decay: float | Tensor,
    **hyper: Any,
) -> ChainOptimizer:
    """`optimizer` in OPTIMIZERS with decay mode `decay` in DECAY_MODES; lr = alpha, weight_decay
    = lambda (floats, or 1-D tensors with one value per packed model). hyper: sgd momentum=0.9,
    dampening=0, nesterov=False; adam betas=(0.9, 0.999), eps=1e-8; rmsprop alpha=0.99, eps=1e-8,
    momentum=0."""
    return ChainOptimizer(params, optimizer, decay, lr, weight_decay, **hyper)


def normalized_weight_decay(
    lambda_norm: float, batch_size: int, n_train: int, epochs: float
) -> float:
    """lambda = lambda_norm * sqrt(b / (B * T)) (paper App. B.1): b = batch size, B = training
    points, T = epochs (of the current restart with warm restarts)."""
    _check_nonneg("lambda_norm", lambda_norm)
    for name, value in (("batch_size", batch_size), ("n_train", n_train), ("epochs", epochs)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return lambda_norm * math.sqrt(batch_size / (n_train * epochs))


def param_groups(
    named_params: Iterable[tuple[str, Tensor]],
    weight_decay: float | Tensor,
    exclude: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Param groups: names matching any fnmatch pattern in `exclude` (e.g. "*bn*", "*.bias")
    get weight_decay 0, the rest `weight_decay`. Default: no exclusion (the paper decays all)."""
    patterns = tuple(exclude)
    decayed: list[Tensor] = []
    excluded: list[Tensor] = []
    for name, p in named_params:
        (excluded if any(fnmatch(name, pat) for pat in patterns) else decayed).append(p)
    groups = [{"params": decayed, "weight_decay": weight_decay}]
    if excluded:
        groups.append({"params": excluded, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def group_lr_multiplier(group: dict[str, Any]) -> float:
    """eta_t of a param group: current lr / initial lr (works for float and PerModel lrs)."""
    return _lr_and_eta(group)[1]


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


def _check_nonneg(name: str, value: Any) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _as_value(name: str, value: Any) -> float | Tensor:
    """A validated float, or a finite >= 0 1-D tensor (one value per packed model)."""
    if isinstance(value, Tensor) and value.dim() == 0:
        value = value.item()
    if not isinstance(value, Tensor):
        _check_nonneg(name, value)
        return float(value)
    bad = value.dim() != 1 or value.numel() == 0 or value.is_complex()
    if bad or not bool(torch.isfinite(value).all() and (value >= 0).all()):
        raise ValueError(f"{name} must be a float or a 1-D tensor of finite values >= 0, "
                         f"got {value.tolist()!r}")
    return value.detach().clone()


def _as_lr(lr: Any) -> float | PerModel:
    if isinstance(lr, PerModel):
        return PerModel(_as_value("lr", lr.values), lr.scale)
    value = _as_value("lr", lr)
    return PerModel(value) if isinstance(value, Tensor) else value


def _check_hyper(optimizer: str, group: dict[str, Any]) -> None:
    for name in ("momentum", "dampening", "eps"):
        if name in HYPER_DEFAULTS[optimizer]:
            _check_nonneg(name, group[name])
    if optimizer == "sgd" and group["nesterov"]:
        if group["momentum"] <= 0 or group["dampening"] != 0:
            raise ValueError("nesterov needs momentum > 0 and dampening 0; valid: nesterov=False")
    if optimizer == "adam":
        betas = group["betas"]
        if not (isinstance(betas, tuple | list) and len(betas) == 2 and all(map(_unit, betas))):
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
    if optimizer == "rmsprop" and not _unit(group["alpha"]):
        raise ValueError(f"rmsprop alpha must be in [0, 1), got {group['alpha']!r}")


def _unit(value: Any) -> bool:
    return isinstance(value, int | float) and 0 <= value < 1


def _check_packed(name: str, value: float | PerModel | Tensor, params: list[Tensor]) -> None:
    if isinstance(value, float):
        return
    k = (value.values if isinstance(value, PerModel) else value).numel()
    for p in params:
        if p.dim() == 0 or p.shape[0] % k:
            raise ValueError(f"{name} has {k} values (one per packed model) but a parameter of "
                             f"shape {tuple(p.shape)} has no leading dim divisible by {k}")


def _lr_and_eta(group: dict[str, Any]) -> tuple[float | Tensor, float]:
    """alpha = the group's initial lr; eta_t = current lr / initial lr (1 where alpha is 0)."""
    lr, initial = group["lr"], group["initial_lr"]
    if isinstance(initial, PerModel) != isinstance(lr, PerModel):
        raise ValueError("group lr and initial_lr must both be floats or both PerModel")
    if isinstance(initial, PerModel):
        return initial.tensor(), (lr.scale / initial.scale if initial.scale else 1.0)
    lr, initial = float(lr), float(initial)
    return initial, (lr / initial if initial else 1.0)


def _per_param(value: float | Tensor, params: list[Tensor]) -> Coef:
    """A float as is; a K-vector as one (leading dim, 1, ..., 1) tensor per parameter."""
    if not isinstance(value, Tensor):
        return value
    return [
        value.to(device=p.device, dtype=p.dtype)
        .repeat_interleave(p.shape[0] // value.numel())
        .view(-1, *([1] * (p.dim() - 1)))
        for p in params
    ]
