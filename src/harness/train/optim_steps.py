"""The small update steps that `harness.train.optim` chains into an optimizer (optax style).

Every step maps an `Updates` to an `Updates`, multi-tensor (`torch._foreach_*`) over all
parameters of one bucket (params that share device, dtype and step count). An update is kept
as a lazy affine form

    u = coef * direction + decay_coef * theta_{t-1}

and applied once at the end by `apply_updates`: theta_t = theta_{t-1} + u. Scaling steps only
multiply the two coefficients, symbolically (`Coef`: no pass over memory, no new tensor), and
a decoupled decay costs one in-place pass over theta, as in torch's foreach AdamW.

A `Coef` is a product  scale * prod(per-cell vectors) * prod(device scalars):
  - scale: a Python float fixed when the step is built (a solo alpha, lambda, a hyperparameter);
  - per-cell vectors ("lr" = alpha, "weight_decay" = lambda of each packed model): laid out by
    the bucket once, as one tensor of each parameter's shape, refreshed only when a value or
    the divergence mask changes;
  - device scalars ("eta" = eta_t, "bias_correction" = Adam's sqrt(1 - b2^t) / (1 - b1^t)):
    0-dim tensors on the parameters' device, computed on the device at every step.
So a step reads no host data and, in the steady state, creates no tensor from host data.

Steps, in the order the chains of `harness.train.optim.make_chain` use them:
    add_decayed_weights   u <- u + lambda * theta_{t-1}
    sgd | adam | rmsprop  u <- d(u), the direction; updates the moments from u
    scale_by_lr           u <- alpha * u
    scale_by_schedule     u <- -eta_t * u          (eta_t = schedule multiplier; descent sign)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor


class Coef(NamedTuple):
    """scale * prod(per-cell vectors named in `cells`) * prod(device scalars in `scalars`).
    A NamedTuple (not a dataclass) so that torch.compile traces it as a constant."""

    scale: float = 1.0
    cells: tuple[str, ...] = ()
    scalars: tuple[str, ...] = ()

    def times(self, other: Coef) -> Coef:
        """The product self * other."""
        if self.scale == 0.0 or other.scale == 0.0:
            return Coef(0.0)
        return Coef(self.scale * other.scale, tuple(sorted(self.cells + other.cells)),
                    tuple(sorted(self.scalars + other.scalars)))

    def is_(self, value: float) -> bool:
        return not self.cells and not self.scalars and self.scale == value


class Values(Protocol):
    """What a bucket gives the steps: coefficients as tensors (see the module docstring).
    `scalars` holds this step's device scalars by name; a step may add one (Adam)."""

    scalars: dict[str, Tensor]

    def cells(self, names: tuple[str, ...]) -> list[Tensor]:
        """The product of per-cell vectors `names`, laid out as one tensor per parameter."""

    def scalar(self, names: tuple[str, ...]) -> Tensor:
        """The product of device scalars `names`, a 0-dim tensor of the parameters' dtype."""


@dataclass(frozen=True)
class Updates:
    """The pending update u = coef * direction + decay_coef * theta_{t-1}; `fresh`: the
    direction tensors are scratch buffers of this step (neither p.grad nor a moment)."""

    direction: list[Tensor]
    coef: Coef = Coef(1.0)
    decay_coef: Coef = Coef(0.0)
    fresh: bool = False


@dataclass(frozen=True)
class StepContext:
    """What the steps of one bucket see at one optimizer step.

    `lr` is alpha (the group's base learning rate), `eta` the schedule multiplier eta_t,
    `weight_decay` lambda, each a `Coef`; `hyper` the group's dict (momentum, betas, eps, ...);
    `step` the bucket's step count t >= 1 (a float64 0-dim tensor, already incremented);
    `values` turns coefficients into tensors."""

    params: list[Tensor]
    states: list[dict[str, Any]]
    step: Tensor
    lr: Coef
    eta: Coef
    weight_decay: Coef
    hyper: dict[str, Any]
    values: Values


Step = Callable[[Updates, StepContext], Updates]


def _value(c: Coef, values: Values) -> float | Tensor | list[Tensor]:
    """c as a float, a 0-dim tensor, or one tensor per parameter (per-cell c)."""
    scale: float | Tensor = c.scale
    if c.scalars:
        scale = values.scalar(c.scalars) * c.scale if c.scale != 1.0 else values.scalar(c.scalars)
    if not c.cells:
        return scale
    laid = values.cells(c.cells)
    if isinstance(scale, float) and scale == 1.0:
        return laid
    return list(torch._foreach_mul(laid, scale))


def _axpy_(ys: list[Tensor], xs: list[Tensor], c: Coef, values: Values, fresh: bool) -> None:
    """ys <- ys + c * xs, in place (xs is scratch when `fresh`, so it may be scaled in place)."""
    v = _value(c, values)
    if isinstance(v, list):
        torch._foreach_addcmul_(ys, xs, v)
    elif isinstance(v, float):
        torch._foreach_add_(ys, xs, alpha=v)
    else:
        if fresh:
            torch._foreach_mul_(xs, v)
        else:
            xs = torch._foreach_mul(xs, v)
        torch._foreach_add_(ys, xs)


def materialize(u: Updates, ctx: StepContext) -> tuple[list[Tensor], bool]:
    """(the tensors of u, fresh): u.direction itself (then p.grad: never write it) or, with a
    pending decay (l2), fresh tensors g + lambda * theta_{t-1}."""
    if not u.coef.is_(1.0):
        raise ValueError("a direction step must come before the scaling steps")
    if u.decay_coef.is_(0.0):
        return u.direction, u.fresh
    v = _value(u.decay_coef, ctx.values)
    if isinstance(v, list):
        return list(torch._foreach_addcmul(u.direction, ctx.params, v)), True
    if isinstance(v, float):
        return list(torch._foreach_add(u.direction, ctx.params, alpha=v)), True
    return list(torch._foreach_add(u.direction, torch._foreach_mul(ctx.params, v))), True


def apply_updates(u: Updates, ctx: StepContext) -> None:
    """theta <- theta + u = theta + decay_coef * theta + coef * direction, in place.

    Exact because theta is still theta_{t-1} when the decay term is added."""
    params = ctx.params
    if not u.decay_coef.is_(0.0):
        v = _value(u.decay_coef, ctx.values)
        if isinstance(v, list):
            torch._foreach_addcmul_(params, params, v)
        else:
            torch._foreach_mul_(params, v + 1.0)
    _axpy_(params, u.direction, u.coef, ctx.values, u.fresh)


def add_decayed_weights(u: Updates, ctx: StepContext) -> Updates:
    """u <- u + lambda * theta_{t-1}: the ONE decay step; its place in the chain is the mode."""
    if not u.decay_coef.is_(0.0):
        raise ValueError("add_decayed_weights appears twice in the chain")
    return replace(u, decay_coef=ctx.weight_decay)


def scale_by_lr(u: Updates, ctx: StepContext) -> Updates:
    """u <- alpha * u (alpha = base learning rate, not scheduled)."""
    return replace(u, coef=u.coef.times(ctx.lr), decay_coef=u.decay_coef.times(ctx.lr))


def scale_by_schedule(u: Updates, ctx: StepContext) -> Updates:
    """u <- -eta_t * u (eta_t = the schedule multiplier; the minus makes it a descent step)."""
    minus_eta = Coef(-1.0).times(ctx.eta)
    return replace(u, coef=u.coef.times(minus_eta), decay_coef=u.decay_coef.times(minus_eta))


def _state_list(ctx: StepContext, key: str, like: list[Tensor]) -> list[Tensor]:
    """The per-parameter moment buffers `key`, zeros where missing (the first step)."""
    for s, g in zip(ctx.states, like, strict=True):
        if key not in s:
            s[key] = torch.zeros_like(g, memory_format=torch.preserve_format)
    return [s[key] for s in ctx.states]


def sgd(u: Updates, ctx: StepContext) -> Updates:
    """Heavy-ball momentum as torch.optim.SGD: b <- mu*b + (1-dampening)*g, d = b
    (nesterov: d = g + mu*b; first step b = g). mu = 0: d = g.

    The paper's Alg. 1 keeps eta_t*alpha inside the buffer (m <- mu*m + eta_t*alpha*g);
    this buffer holds raw gradients and eta_t*alpha multiplies it afterwards. The two agree
    for a constant schedule and differ when eta_t changes (tests/train/test_optim.py measures it).
    """
    g, fresh = materialize(u, ctx)
    mu, dampening = ctx.hyper["momentum"], ctx.hyper["dampening"]
    if mu == 0:
        return Updates(g, fresh=fresh)
    if "momentum_buffer" not in ctx.states[0]:
        for s, gi in zip(ctx.states, g, strict=True):
            s["momentum_buffer"] = gi.detach().clone(memory_format=torch.preserve_format)
        bufs = [s["momentum_buffer"] for s in ctx.states]
    else:
        bufs = [s["momentum_buffer"] for s in ctx.states]
        torch._foreach_mul_(bufs, mu)
        torch._foreach_add_(bufs, g, alpha=1.0 - dampening)
    if ctx.hyper["nesterov"]:
        return Updates(list(torch._foreach_add(g, bufs, alpha=mu)), fresh=True)
    return Updates(bufs)


def adam(u: Updates, ctx: StepContext) -> Updates:
    """Adam as torch.optim.Adam: m <- b1*m + (1-b1)*g; v <- b2*v + (1-b2)*g^2;
    d = (m / (1 - b1^t)) / (sqrt(v) / sqrt(1 - b2^t) + eps). 1 / (1 - b1^t) is a device scalar
    ("bias_correction") that the later scaling steps fold into the coefficient; 1 / sqrt(1 -
    b2^t) multiplies sqrt(v) in place (a 0-dim tensor: foreach add of a tensor scalar would
    read it on the host). In place in one fresh buffer: on a CPU, allocations cost more than
    passes."""
    g, fresh = materialize(u, ctx)
    beta1, beta2 = ctx.hyper["betas"]
    m = _state_list(ctx, "exp_avg", g)
    v = _state_list(ctx, "exp_avg_sq", g)
    torch._foreach_lerp_(m, g, 1.0 - beta1)
    torch._foreach_mul_(v, beta2)
    torch._foreach_addcmul_(v, g, g, value=1.0 - beta2)
    dtype = ctx.params[0].dtype  # the scalars are computed in float64 from the step count
    inv_root_bc2 = torch.rsqrt(1.0 - torch.pow(beta2, ctx.step)).to(dtype)
    ctx.values.scalars["bias_correction"] = (1.0 / (1.0 - torch.pow(beta1, ctx.step))).to(dtype)
    if fresh:  # l2's g + lambda*theta, no longer needed: reuse it
        denom = g
        torch._foreach_copy_(denom, v)
        torch._foreach_sqrt_(denom)
    else:  # g is p.grad: sqrt(v) needs a fresh buffer
        denom = list(torch._foreach_sqrt(v))
    torch._foreach_mul_(denom, inv_root_bc2)
    torch._foreach_add_(denom, ctx.hyper["eps"])
    torch._foreach_reciprocal_(denom)
    torch._foreach_mul_(denom, m)
    return Updates(denom, coef=Coef(scalars=("bias_correction",)), fresh=True)


def rmsprop(u: Updates, ctx: StepContext) -> Updates:
    """RMSprop as torch.optim.RMSprop (not centered): v <- a*v + (1-a)*g^2;
    d = g / (sqrt(v) + eps); with momentum mu > 0: b <- mu*b + g / (sqrt(v) + eps), d = b."""
    g, _ = materialize(u, ctx)
    smoothing, mu = ctx.hyper["alpha"], ctx.hyper["momentum"]
    v = _state_list(ctx, "square_avg", g)
    torch._foreach_mul_(v, smoothing)
    torch._foreach_addcmul_(v, g, g, value=1.0 - smoothing)
    avg = list(torch._foreach_sqrt(v))
    torch._foreach_add_(avg, ctx.hyper["eps"])
    torch._foreach_reciprocal_(avg)
    if mu == 0:
        torch._foreach_mul_(avg, g)
        return Updates(avg, fresh=True)
    bufs = _state_list(ctx, "momentum_buffer", g)
    torch._foreach_mul_(bufs, mu)
    torch._foreach_addcmul_(bufs, g, avg)
    return Updates(bufs)


DIRECTIONS: dict[str, Step] = {"sgd": sgd, "adam": adam, "rmsprop": rmsprop}
