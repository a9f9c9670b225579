"""SGD, Adam and RMSprop with the four weight-decay modes of Loshchilov & Hutter (ICLR 2019).

Notation: alpha = base learning rate (`lr`), eta_t = schedule multiplier = current lr / initial
lr of the param group (so any torch LR scheduler drives it), lambda = `weight_decay`,
theta_{t-1} = the weights before the step, d(.) = the optimizer's direction (SGD's momentum
buffer, Adam's m_hat / (sqrt(v_hat) + eps), RMSprop's g / (sqrt(v) + eps)); the moments inside
d are updated from whatever d is given.

Every optimizer is the chain [d, scale_by_lr, scale_by_schedule] of `harness.train.optim_steps`; a
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
model, where model k's part of every parameter p is p[k*n:(k+1)*n] along dim 0 (the leading
dim of p is divisible by K). Per-cell alphas live in group["cell_lr"] (a CPU float64 K-vector)
and group["lr"] is then the schedule carrier, initially 1.0: lr_t of cell k = cell_lr[k] *
lr / initial_lr, so any torch LR scheduler still drives a pack. `mask_cell(k)` makes cell k
inert (a diverged cell): its alpha and lambda count as 0, its moments are zeroed.

Device-resident step. The optimizer groups the params of each param group into buckets (same
device, dtype and step count) once, and lays every per-cell value out once per bucket, as one
tensor of each parameter's shape (the foreach kernels then see matching shapes); the layout is
rebuilt only when a value changes (a masked cell, a new lambda, a param gaining a gradient).
The step count t is one float64 0-dim tensor per bucket on the params' device (shared by the
bucket's states), Adam's bias corrections are computed from it there, and eta_t is read from
`optimizer.eta` when the caller sets it (a 0-dim device tensor, e.g. harness.train.loop from
harness.train.schedules), else from the group's lr / initial_lr (a Python float: any torch LR
scheduler). A steady-state step thus copies nothing between host and device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from fnmatch import fnmatch
from typing import Any

import torch
from torch import Tensor

from harness.spec.decay import DECAY_MODES
from harness.spec.optimizer import HYPERPARAMETERS, OPTIMIZERS
from harness.train.optim_steps import (
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


class Bucket:
    """Params of one group sharing device, dtype and step count, with their per-cell values
    laid out once (see the module docstring); implements optim_steps.Values."""

    def __init__(self, params: list[Tensor], states: list[dict[str, Any]], step: Tensor,
                 lr: Coef, weight_decay: Coef, cell_values: dict[str, Tensor]) -> None:
        self.params, self.states, self.step = params, states, step
        self.lr, self.weight_decay = lr, weight_decay  # alpha and lambda, fixed per layout
        self.cell_values = cell_values  # name -> (K,) float64 CPU vector, mask applied
        self.scalars: dict[str, Tensor] = {}
        self._laid: dict[tuple[str, ...], list[Tensor]] = {}

    def cells(self, names: tuple[str, ...]) -> list[Tensor]:
        if names not in self._laid:
            vector = self.cell_values[names[0]]
            for name in names[1:]:
                vector = vector * self.cell_values[name]
            self._laid[names] = [_lay_out(vector, p) for p in self.params]
        return self._laid[names]

    def scalar(self, names: tuple[str, ...]) -> Tensor:
        out = self.scalars[names[0]]
        for name in names[1:]:
            out = out * self.scalars[name]
        return out


class ChainOptimizer(torch.optim.Optimizer):
    """One optimizer class for every (optimizer, decay) pair; see the module docstring.

    Param groups may set their own lr, weight_decay (e.g. 0 for excluded params) and hyper.
    `eta`: None (eta_t = group lr / initial_lr) or a 0-dim tensor the caller writes eta_t to.
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
        names = HYPERPARAMETERS[optimizer]
        unknown = sorted(set(hyper) - set(names))
        if unknown:
            raise ValueError(f"unknown {optimizer} hyperparameter {unknown[0]!r}; "
                             f"valid: {', '.join(names)}")
        missing = [n for n in names if n not in hyper]
        if missing:
            raise ValueError(f"{optimizer} needs {', '.join(missing)}: give every one of "
                             f"{', '.join(names)} (configs/optimizer/{optimizer}.yaml has them)")
        defaults = {"lr": lr, "weight_decay": _as_value("weight_decay", weight_decay), **hyper}
        _check_hyper(optimizer, defaults)
        self.eta: Tensor | None = None
        self.cell_mask: Tensor | None = None  # (K,) bool on the CPU; False: a masked cell
        self._plans: dict[int, tuple[tuple, list[Bucket]]] = {}
        self._prepared: list[tuple[Bucket, dict[str, Any]]] = []
        super().__init__(params, defaults)

    @property
    def packs(self) -> int:
        """K: the length of the per-cell values (1 when every value is a float)."""
        sizes = {v.numel() for g in self.param_groups for v in (g.get("cell_lr"),
                 g["weight_decay"]) if isinstance(v, Tensor)}
        if len(sizes) > 1:
            raise ValueError(f"per-cell values of sizes {sorted(sizes)}; valid: one K")
        return sizes.pop() if sizes else 1

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        lr = _as_value("lr", param_group.get("lr", self.defaults["lr"]))
        if isinstance(lr, Tensor):  # per-cell alphas; group lr carries the schedule
            param_group = {**param_group, "lr": 1.0, "cell_lr": lr}
        else:
            param_group = {**param_group, "lr": lr}
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group["weight_decay"] = _as_value("weight_decay", group["weight_decay"])
        _check_hyper(self.optimizer_name, group)
        for name in ("cell_lr", "weight_decay"):
            _check_packed(name, group.get(name), group["params"])
        group.setdefault("initial_lr", group["lr"])  # as torch schedulers do

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._plans.clear()

    def mask_cell(self, k: int) -> None:
        """Make cell k inert: alpha_k and lambda_k count as 0 from now on and its slice of
        every moment is zeroed (lr 0 times a NaN moment would still be NaN)."""
        packs = self.packs
        if packs == 1:
            raise ValueError("mask_cell needs per-model lr or weight_decay; valid: an "
                             "optimizer built with 1-D tensors of K values")
        if not 0 <= k < packs:
            raise ValueError(f"model index k={k} is out of range; valid: 0 <= k < {packs}")
        mask = torch.ones(packs, dtype=torch.bool) if self.cell_mask is None else self.cell_mask
        mask[k] = False
        self.cell_mask = mask
        self._plans.clear()
        for group in self.param_groups:
            for p in group["params"]:
                n = p.shape[0] // packs
                for value in self.state[p].values():
                    if isinstance(value, Tensor) and value.shape == p.shape:
                        value.narrow(0, k * n, n).zero_()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.prepare()
        self.apply_prepared()
        return loss

    def prepare(self, assume_grads: bool = False) -> list[tuple[Bucket, dict[str, Any]]]:
        """The host-side half of a step: the buckets of every group (cached; see `_plan`).
        `step()` = prepare() + apply_prepared(); a compiled train step calls
        prepare(assume_grads=True) before its backward (every param that requires grad will
        have one) outside the compiled region, and apply_prepared() inside it."""
        self._prepared = [(bucket, group) for index, group in enumerate(self.param_groups)
                          for bucket in self._plan(index, group, assume_grads)]
        return self._prepared

    @torch.no_grad()
    def apply_prepared(self) -> None:
        """The device half of a step: the chain over every bucket of the last prepare()."""
        for bucket, group in self._prepared:
            self._step_bucket(bucket, group)

    def _plan(self, index: int, group: dict[str, Any], assume_grads: bool) -> list[Bucket]:
        """The group's buckets, rebuilt only when the params with a gradient, a per-cell value
        or the mask changed (host-side checks only: no device read in the steady state)."""
        for p in group["params"]:
            if p.grad is not None and p.grad.is_sparse:
                raise ValueError("sparse gradients are not supported; valid: dense gradients")
        present = [p.requires_grad if assume_grads else p.grad is not None
                   for p in group["params"]]
        key = (tuple(present),
               *(_signature(group.get(name)) for name in ("cell_lr", "weight_decay", "initial_lr")),
               _signature(self.cell_mask))
        cached = self._plans.get(index)
        if cached is None or cached[0] != key:
            cached = key, self._build_buckets(group, present)
            self._plans[index] = cached
        return cached[1]

    def _build_buckets(self, group: dict[str, Any], present: list[bool]) -> list[Bucket]:
        """Group the params with a gradient by (device, dtype, step count); one shared step
        tensor per bucket (the only place that reads a step count back from the device)."""
        values = self._cell_values(group)
        decayed = not (is_zero(group["weight_decay"]) or self.decay == "none")
        lr = Coef(cells=("lr",)) if values else Coef(float(group["initial_lr"]))
        weight_decay = (Coef(0.0) if not decayed else Coef(cells=("weight_decay",)) if values
                        else Coef(float(group["weight_decay"])))
        with_grad = [p for p, has in zip(group["params"], present, strict=True) if has]
        counters = {id(c): c for c in (self.state[p].get("step") for p in with_grad)
                    if isinstance(c, Tensor)}
        for p, has in zip(group["params"], present, strict=True):
            step = self.state[p].get("step") if p in self.state else None
            if not has and isinstance(step, Tensor) and id(step) in counters:
                self.state[p]["step"] = step.clone()  # a param without grad stops counting
        by_key: dict[tuple, list[Tensor]] = {}
        for p in with_grad:
            step = self.state[p].get("step", 0)
            # one shared counter: keep it, reading nothing; several (a loaded state): read
            # their values once and merge equal ones
            count = id(step) if len(counters) == 1 and isinstance(step, Tensor) else float(step)
            by_key.setdefault((p.device, p.dtype, count), []).append(p)
        buckets = []
        for (device, _, count), params in by_key.items():
            shared = (counters[count] if isinstance(count, int) else
                      torch.tensor(count, dtype=torch.float64, device=device))
            states = [self.state[p] for p in params]
            for state in states:
                state["step"] = shared
            buckets.append(Bucket(params, states, shared, lr, weight_decay, values))
        return buckets

    def _cell_values(self, group: dict[str, Any]) -> dict[str, Tensor]:
        """(K,) float64 CPU vectors of alpha and lambda, zero for masked cells; {} when every
        value is a float (K = 1 given as 1-element tensors takes the per-cell path, whose
        arithmetic is then the same as a pack's)."""
        packs, mask = self.packs, self.cell_mask
        per_cell = [v for v in (group.get("cell_lr"), group["weight_decay"])
                    if isinstance(v, Tensor)]
        if not per_cell and mask is None:
            return {}
        out = {}
        for name, value in (("lr", group.get("cell_lr", group["initial_lr"])),
                            ("weight_decay", group["weight_decay"])):
            vector = torch.as_tensor(value, dtype=torch.float64).expand(packs)
            out[name] = vector * mask if mask is not None else vector.clone()
        return out

    def _step_bucket(self, bucket: Bucket, group: dict[str, Any]) -> None:
        """Run the chain once over the bucket."""
        bucket.step.add_(1.0)
        bucket.scalars.clear()
        if self.eta is not None:
            bucket.scalars["eta"] = self.eta.to(bucket.params[0].dtype)
            eta = Coef(scalars=("eta",))
        else:
            eta = Coef(group_lr_multiplier(group))
        ctx = StepContext(
            params=bucket.params,
            states=bucket.states,
            step=bucket.step,
            lr=bucket.lr,
            eta=eta,
            weight_decay=bucket.weight_decay,
            hyper=group,
            values=bucket,
        )
        updates = Updates([p.grad for p in bucket.params])
        for f in self.chain:
            updates = f(updates, ctx)
        apply_updates(updates, ctx)


def build_optimizer(
    params: Iterable[Tensor] | Iterable[dict[str, Any]],
    optimizer: str,
    decay: str,
    lr: float | Tensor,
    weight_decay: float | Tensor,
    **hyper: Any,
) -> ChainOptimizer:
    """`optimizer` in OPTIMIZERS with decay mode `decay` in DECAY_MODES; lr = alpha, weight_decay
    = lambda (floats, or 1-D tensors with one value per packed model). hyper: every one of
    HYPERPARAMETERS[optimizer] (sgd momentum, dampening, nesterov; adam betas, eps; rmsprop
    alpha, eps, momentum), with no defaults: configs/optimizer/<name>.yaml holds the values."""
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
    """eta_t of a param group: current lr / initial lr (1 where the initial lr is 0)."""
    lr, initial = float(group["lr"]), float(group["initial_lr"])
    return lr / initial if initial else 1.0


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


def _check_hyper(optimizer: str, group: dict[str, Any]) -> None:
    for name in ("momentum", "dampening", "eps"):
        if name in HYPERPARAMETERS[optimizer]:
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


def _check_packed(name: str, value: Any, params: list[Tensor]) -> None:
    if not isinstance(value, Tensor):
        return
    k = value.numel()
    for p in params:
        if p.dim() == 0 or p.shape[0] % k:
            raise ValueError(f"{name} has {k} values (one per packed model) but a parameter of "
                             f"shape {tuple(p.shape)} has no leading dim divisible by {k}")


def _signature(value: Any) -> Any:
    """What identifies a group value without reading a device: a float itself, a tensor its
    identity and in-place version counter."""
    if isinstance(value, Tensor):
        return id(value), value._version
    return value


def is_zero(value: float | Tensor) -> bool:
    """True when a float or every entry of a per-cell tensor is 0 (e.g. an excluded group)."""
    return bool((torch.as_tensor(value) == 0).all())


def _lay_out(vector: Tensor, p: Tensor) -> Tensor:
    """A (K,) per-cell vector as a tensor of p's shape, dtype, device and memory format whose
    slice k along dim 0 holds vector[k]: the coefficient foreach kernels take elementwise."""
    column = vector.to(p.dtype).repeat_interleave(p.shape[0] // vector.numel())
    column = column.view(-1, *([1] * (p.dim() - 1))).to(p.device)
    return torch.empty_like(p).copy_(column.expand_as(p))
