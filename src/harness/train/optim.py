"""SGD, Adam and RMSprop with the four weight-decay modes of Loshchilov & Hutter (ICLR 2019).

Notation: alpha = base learning rate (`lr`), eta_t = schedule multiplier (lr_t = alpha*eta_t),
lambda = `weight_decay`, theta_{t-1} = the weights before the step, d(.) = the optimizer's
direction (SGD's momentum buffer, Adam's m_hat / (sqrt(v_hat) + eps), RMSprop's
g / (sqrt(v) + eps)); the moments inside d are updated from whatever d is given.

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

Units: lr = alpha, per step, multiplied by eta_t; weight_decay = lambda, under l2 a gradient
term (then through d, alpha and eta_t), under decoupled per step multiplied by eta_t, not
alpha, under decoupled_lr per step multiplied by alpha*eta_t; eta_t is dimensionless.

One eta path (optax style): alpha and lambda are group values bound when the optimizer is
built (a caller may replace one, e.g. lambda per restart period, and the optimizer lays it out
again; no schedule writes them), and the caller passes eta_t to every step as a 0-dim tensor
on the params' device, `step(eta=...)` (harness.train.step reads it from the device table of
harness.train.schedules). A step without eta_t is an error.

Packed models: `lr` and `weight_decay` may be 1-D tensors of length K, one value per packed
model, where model k's part of every parameter p is p[k*n:(k+1)*n] along dim 0 (the leading
dim of p is divisible by K); lr_t of cell k = lr[k] * eta_t. `mask_cell(k)` makes cell k
inert (a diverged cell): its alpha and lambda count as 0, its moments are zeroed, and from then
on every step sets its slice of every gradient to 0 before the chain reads it (`mask_grads`,
from a (K,) bool device mask), so its update is exactly 0 however NaN its gradients come out:

    g_k <- 0;  theta_k <- theta_k - eta_t*(0 * d(0) + 0 * theta_k) = theta_k

A compiled step always runs that masking (it reads the device mask, all False while every cell
trains: the same values), so masking a cell changes only tensors in place and builds no graph.

Device-resident step: the params of each group are bucketed and the per-cell values laid out
once (`harness.train.buckets`); the step count t is a float64 0-dim tensor per bucket on the
params' device, Adam's bias corrections are computed from it there, and eta_t arrives there.
A steady-state step thus copies nothing between host and device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from fnmatch import fnmatch
from typing import Any

import torch
from torch import Tensor, nn

from harness.spec import decay as decay_spec
from harness.spec import optimizer as optimizer_spec
from harness.spec.decay import DECAY_MODES, EXCLUDE_KINDS
from harness.spec.optimizer import HYPERPARAMETERS, OPTIMIZERS
from harness.spec.values import Number, SpecError, one_of
from harness.train.buckets import Bucket, build_buckets, cell_values, is_zero
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

_NONNEG = Number()               # alpha and lambda of a group (0: a cell that is off)
_POSITIVE = Number(strict=True)   # b, B and T of normalized weight decay


def make_chain(optimizer: str, decay: str) -> tuple[Step, ...]:
    """The steps of one optimizer update; the decay mode only moves `wd` along the chain."""
    one_of("optimizer", optimizer, OPTIMIZERS)
    one_of("decay", decay, DECAY_MODES)
    d, wd = DIRECTIONS[optimizer], add_decayed_weights
    lr, sched = scale_by_lr, scale_by_schedule
    chains = {
        "none": (d, lr, sched),
        "l2": (wd, d, lr, sched),
        "decoupled_lr": (d, wd, lr, sched),
        "decoupled": (d, lr, wd, sched),
    }
    return chains[decay]


class ChainOptimizer(torch.optim.Optimizer):
    """One optimizer class for every (optimizer, decay) pair; see the module docstring.

    Group values: `lr` = alpha, `weight_decay` = lambda (units in the module docstring), each
    a float or a (K,) per-cell tensor; param groups may set their own (e.g. weight_decay 0 for
    excluded params) and their own hyper. `step(eta=...)`: eta_t, a 0-dim tensor on the params'
    device, at every step.
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
        hyper = optimizer_spec.check(optimizer, hyper)  # every one given, each in range
        defaults = {"lr": lr, "weight_decay": _as_value("weight_decay", weight_decay), **hyper}
        self.cell_mask: Tensor | None = None  # (K,) bool on the CPU; False: a masked cell
        self._dead: dict[torch.device, Tensor] = {}  # the same, negated, on each params' device
        self._plans: dict[int, tuple[tuple, list[Bucket]]] = {}
        self._prepared: list[tuple[Bucket, dict[str, Any]]] = []
        super().__init__(params, defaults)

    @property
    def packs(self) -> int:
        """K: the length of the per-cell values (1 when every value is a float)."""
        sizes = {v.numel() for g in self.param_groups for v in (g["lr"], g["weight_decay"])
                 if isinstance(v, Tensor)}
        if len(sizes) > 1:
            raise ValueError(f"per-cell values of sizes {sorted(sizes)}; valid: one K")
        return sizes.pop() if sizes else 1

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        lr = _as_value("lr", param_group.get("lr", self.defaults["lr"]))
        super().add_param_group({**param_group, "lr": lr})
        group = self.param_groups[-1]
        group["weight_decay"] = _as_value("weight_decay", group["weight_decay"])
        names = HYPERPARAMETERS[self.optimizer_name]  # a group may set its own
        group.update(optimizer_spec.check(self.optimizer_name, {k: group[k] for k in names}))
        for name in ("lr", "weight_decay"):
            _check_packed(name, group[name], group["params"])

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
        for dead in self._dead.values():
            dead[k] = True  # in place: a compiled step reads this very tensor
        for index, (_, buckets) in list(self._plans.items()):
            values = cell_values(self.param_groups[index], packs, mask)
            if all(set(b.cell_values) == set(values) for b in buckets):
                for bucket in buckets:
                    bucket.remask(values)  # in place: no new bucket, so no new graph
            else:  # a group of float values turns per-cell: built again at the next step
                del self._plans[index]
        for group in self.param_groups:
            for p in group["params"]:
                n = p.shape[0] // packs
                for value in self.state[p].values():
                    if isinstance(value, Tensor) and value.shape == p.shape:
                        value.narrow(0, k * n, n).zero_()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *,
             eta: Tensor | None = None) -> Any:
        """One update with schedule multiplier `eta` = eta_t (a 0-dim tensor on the params'
        device; lr_t = alpha * eta_t)."""
        _check_eta(eta, set())
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.prepare()
        self.apply_prepared(eta)
        return loss

    def prepare(self, assume_grads: bool = False) -> list[tuple[Bucket, dict[str, Any]]]:
        """The host-side half of a step: the buckets of every group (cached; see `_plan`).
        `step(eta=eta)` = prepare() + apply_prepared(eta); a compiled train step calls
        prepare(assume_grads=True) before its backward (every param that requires grad will
        have one) outside the compiled region, and apply_prepared(eta) inside it."""
        self._prepared = [(bucket, group) for index, group in enumerate(self.param_groups)
                          for bucket in self._plan(index, group, assume_grads)]
        return self._prepared

    @torch.no_grad()
    def apply_prepared(self, eta: Tensor) -> None:
        """The device half of a step: the chain over every bucket of the last prepare(), with
        eta_t = `eta` (a 0-dim tensor on the params' device)."""
        _check_eta(eta, {bucket.params[0].device for bucket, _ in self._prepared})
        self.mask_grads()
        for bucket, group in self._prepared:
            self._step_bucket(bucket, group, eta)

    @torch.no_grad()
    def mask_grads(self) -> None:
        """g_k <- 0 (an assignment: NaN becomes 0) in every gradient of the last prepare(), for
        each masked cell k, read from the (K,) bool device mask: nothing from the host. Eager,
        only once a cell is masked (a pack's steady-state step dispatches no more ops than a
        solo one); compiled, always, so that masking a cell later builds no new graph. Every
        step calls it; a GradScaler's caller calls it before scaler.step (its inf check must
        not see a dead cell's NaN)."""
        if not (torch.compiler.is_compiling() or self.cell_mask is not None):
            return
        for bucket, _ in self._prepared:
            if bucket.dead is None:
                continue
            packs = bucket.dead.numel()
            for p in bucket.params:
                mask = bucket.dead.view(packs, *([1] * p.dim()))
                p.grad.unflatten(0, (packs, -1)).masked_fill_(mask, 0.0)

    def _plan(self, index: int, group: dict[str, Any], assume_grads: bool) -> list[Bucket]:
        """The group's buckets, rebuilt only when the params with a gradient or a per-cell value
        changed (host-side checks only: no device read in the steady state)."""
        for p in group["params"]:
            if p.grad is not None and p.grad.is_sparse:
                raise ValueError("sparse gradients are not supported; valid: dense gradients")
        present = [p.requires_grad if assume_grads else p.grad is not None
                   for p in group["params"]]
        key = (tuple(present), _signature(group["lr"]), _signature(group["weight_decay"]))
        cached = self._plans.get(index)
        if cached is None or cached[0] != key:  # mask_cell lays a new mask out in place
            decayed = not (is_zero(group["weight_decay"]) or self.decay == "none")
            packs = self.packs
            buckets = build_buckets(group, self.state, present, decayed, packs, self.cell_mask)
            for bucket in buckets:
                bucket.dead = self._dead_on(bucket.params[0].device) if packs > 1 else None
            cached = key, buckets
            self._plans[index] = cached
        return cached[1]

    def _dead_on(self, device: torch.device) -> Tensor:
        """The (K,) bool mask of masked cells on `device`, one tensor per device for good."""
        if device not in self._dead:
            alive = torch.ones(self.packs, dtype=torch.bool) if self.cell_mask is None \
                else self.cell_mask
            self._dead[device] = (~alive).to(device)
        return self._dead[device]

    def _step_bucket(self, bucket: Bucket, group: dict[str, Any], eta: Tensor) -> None:
        """Run the chain once over the bucket."""
        bucket.counter.add_(1.0)  # t <- t + 1 (the (1,) counter: see harness.train.buckets)
        bucket.scalars.clear()
        bucket.scalars["eta"] = eta.to(bucket.params[0].dtype)
        ctx = StepContext(
            params=bucket.params,
            states=bucket.states,
            step=bucket.step,
            lr=bucket.lr,
            eta=Coef(scalars=("eta",)),
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
    = lambda (floats, or 1-D tensors with one value per packed model), bound here: eta_t goes
    to every `step(eta=...)`. hyper: every one of HYPERPARAMETERS[optimizer] (sgd momentum,
    dampening, nesterov; adam betas, eps; rmsprop alpha, eps, momentum), with no defaults:
    configs/optimizer/<name>.yaml holds the values."""
    return ChainOptimizer(params, optimizer, decay, lr, weight_decay, **hyper)


def normalized_weight_decay(
    lambda_norm: float, batch_size: int, n_train: int, epochs: float
) -> float:
    """lambda = lambda_norm * sqrt(b / (B * T)) (paper App. B.1): b = batch size, B = training
    points, T = epochs (of the current restart with warm restarts)."""
    lambda_norm = _NONNEG.check("lambda_norm", lambda_norm)
    for name, value in (("batch_size", batch_size), ("n_train", n_train), ("epochs", epochs)):
        _POSITIVE.check(name, value)
    return lambda_norm * math.sqrt(batch_size / (n_train * epochs))


NORM_MODULES: tuple[type[nn.Module], ...] = (  # decay.exclude kind "norm": their parameters
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm*
    nn.GroupNorm, nn.LayerNorm, *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))
_SHOWN = 8  # parameter names an error message lists before "..."


def parameter_kinds(model: nn.Module) -> dict[str, list[str]]:
    """The names (as model.named_parameters() gives them) of each kind of EXCLUDE_KINDS, found
    by module type and attribute, whatever the names: "norm" every parameter of a module of
    NORM_MODULES, "bias" every module's `bias` parameter."""
    owners: dict[int, tuple[nn.Module, str]] = {}  # id(param) -> (module holding it, attribute)
    for _, module in model.named_modules(remove_duplicate=False):
        for attr, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), (module, attr))
    kinds: dict[str, list[str]] = {kind: [] for kind in EXCLUDE_KINDS}
    for name, p in model.named_parameters():
        module, attr = owners[id(p)]
        if isinstance(module, NORM_MODULES):
            kinds["norm"].append(name)
        if attr == "bias":
            kinds["bias"].append(name)
    return kinds


def excluded_names(model: nn.Module, exclude: Iterable[str],
                   model_name: str = "the model") -> set[str]:
    """The names of the parameters `exclude` takes out of weight decay: each entry a kind of
    EXCLUDE_KINDS or an fnmatch pattern of parameter names (harness.spec.decay.check_exclude).
    An entry that matches no parameter is a SpecError of one line naming what could match."""
    entries = decay_spec.check_exclude(tuple(exclude))
    names = [name for name, _ in model.named_parameters()]
    kinds = parameter_kinds(model) if entries else {}
    excluded: set[str] = set()
    for entry in entries:
        matched = kinds[entry] if decay_spec.is_kind(entry) else \
            [name for name in names if fnmatch(name, entry)]
        if not matched:
            shown = ", ".join(names[:_SHOWN]) + (f", ... ({len(names)} in all)"
                                                 if len(names) > _SHOWN else "")
            raise SpecError(f"decay.exclude: {entry!r} matches no parameter of {model_name}; "
                            f"kinds: {', '.join(EXCLUDE_KINDS)}; parameter names: "
                            f"{shown or 'none'}")
        excluded.update(matched)
    return excluded


def param_groups(
    model: nn.Module,
    weight_decay: float | Tensor,
    exclude: Iterable[str] = (),
    model_name: str = "the model",
) -> list[dict[str, Any]]:
    """Param groups of `model`: the parameters `exclude` names (kinds such as "norm" and
    "bias", or fnmatch patterns of parameter names: `excluded_names`, whose SpecError an entry
    that matches nothing raises) get weight_decay 0, the rest `weight_decay`. Default: no
    exclusion (the paper decays all)."""
    excluded_set = excluded_names(model, exclude, model_name)
    decayed: list[Tensor] = []
    excluded: list[Tensor] = []
    for name, p in model.named_parameters():
        (excluded if name in excluded_set else decayed).append(p)
    groups = [{"params": decayed, "weight_decay": weight_decay}]
    if excluded:
        groups.append({"params": excluded, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def _check_eta(eta: Any, devices: set[torch.device]) -> None:
    """eta_t must be a 0-dim tensor on the params' `devices` (a host value would be copied to
    the device at every step)."""
    if not (isinstance(eta, Tensor) and eta.dim() == 0):
        got = f"a tensor of shape {tuple(eta.shape)}" if isinstance(eta, Tensor) else repr(eta)
        raise ValueError(f"a step needs eta=eta_t, the schedule multiplier as a 0-dim tensor on "
                         f"the params' device (harness.train.schedules.eta_table); got {got}")
    if devices - {eta.device}:
        raise ValueError(f"eta is on {eta.device}, the params on "
                         f"{', '.join(map(str, sorted(devices, key=str)))}; valid: eta on the "
                         "params' device")


def _as_value(name: str, value: Any) -> float | Tensor:
    """A validated float, or a finite >= 0 1-D tensor (one value per packed model)."""
    if isinstance(value, Tensor) and value.dim() == 0:
        value = value.item()
    if not isinstance(value, Tensor):
        return float(_NONNEG.check(name, value))
    bad = value.dim() != 1 or value.numel() == 0 or value.is_complex()
    if bad or not bool(torch.isfinite(value).all() and (value >= 0).all()):
        raise ValueError(f"{name} must be a float or a 1-D tensor of finite values >= 0, "
                         f"got {value.tolist()!r}")
    return value.detach().clone()


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
