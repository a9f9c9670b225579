"""The small update steps that `harness.optim` chains into an optimizer (optax style).

Every step maps an `Updates` to an `Updates`, multi-tensor (`torch._foreach_*`) over all
parameters of a param group. An update is kept as a lazy affine form

    u = coef * direction + decay_coef * theta_{t-1}

and applied once at the end by `apply_updates`: theta_t = theta_{t-1} + u. Scaling steps only
multiply the two coefficients (no pass over memory), and a decoupled decay costs one in-place
multiply of theta, as in torch's foreach AdamW.

Coefficients (`Coef`) are a Python float (one value for the whole group) or a list with one
tensor per parameter, broadcastable to it: one value per packed model (see `harness.optim`).

Steps, in the order the chains of `harness.optim.make_chain` use them:
    add_decayed_weights   u <- u + lambda * theta_{t-1}
    sgd | adam | rmsprop  u <- d(u), the direction; updates the moments from u
    scale_by_lr           u <- alpha * u
    scale_by_schedule     u <- -eta_t * u          (eta_t = schedule multiplier; descent sign)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

Coef = float | list[Tensor]


@dataclass(frozen=True)
class Updates:
    """The pending update u = coef * direction + decay_coef * theta_{t-1}."""

    direction: list[Tensor]
    coef: Coef = 1.0
    decay_coef: Coef = 0.0


@dataclass(frozen=True)
class StepContext:
    """What the steps of one param group see at one optimizer step.

    `lr` is alpha (the group's base learning rate), `eta` the schedule multiplier eta_t,
    `weight_decay` lambda; `hyper` the group's dict (momentum, betas, eps, ...); `step` t >= 1.
    """

    params: list[Tensor]
    states: list[dict[str, Any]]
    step: int
    lr: Coef
    eta: float
    weight_decay: Coef
    hyper: dict[str, Any]


Step = Callable[[Updates, StepContext], Updates]


def _mul(a: Coef, b: Coef) -> Coef:
    if not isinstance(a, list) and not isinstance(b, list):
        return a * b
    if not isinstance(a, list):
        a, b = b, a
    if not isinstance(b, list):
        return [x * b for x in a]
    return [x * y for x, y in zip(a, b, strict=True)]


def _add(a: Coef, b: Coef) -> Coef:
    if not isinstance(a, list) and not isinstance(b, list):
        return a + b
    if not isinstance(a, list):
        a, b = b, a
    if not isinstance(b, list):
        return [x + b for x in a]
    return [x + y for x, y in zip(a, b, strict=True)]


def _is(c: Coef, value: float) -> bool:
    return not isinstance(c, list) and c == value


def _axpy_(ys: list[Tensor], xs: list[Tensor], c: Coef) -> None:
    """ys <- ys + c * xs, in place."""
    if isinstance(c, list):
        torch._foreach_addcmul_(ys, xs, c)
    else:
        torch._foreach_add_(ys, xs, alpha=c)


def materialize(u: Updates, params: list[Tensor]) -> list[Tensor]:
    """The tensors of u: fresh ones, or u.direction itself (then p.grad: never write it)."""
    if _is(u.decay_coef, 0.0):
        return u.direction if _is(u.coef, 1.0) else torch._foreach_mul(u.direction, u.coef)
    if _is(u.coef, 1.0) and isinstance(u.decay_coef, list):
        return torch._foreach_addcmul(u.direction, params, u.decay_coef)
    if _is(u.coef, 1.0):
        return torch._foreach_add(u.direction, params, alpha=u.decay_coef)
    out = torch._foreach_mul(u.direction, u.coef)
    _axpy_(out, params, u.decay_coef)
    return out


def apply_updates(u: Updates, params: list[Tensor]) -> None:
    """theta <- theta + u = (1 + decay_coef) * theta + coef * direction, in place.

    Exact because theta is still theta_{t-1} when the decay factor is applied.
    """
    if not _is(u.decay_coef, 0.0):
        torch._foreach_mul_(params, _add(u.decay_coef, 1.0))
    _axpy_(params, u.direction, u.coef)


def add_decayed_weights(u: Updates, ctx: StepContext) -> Updates:
    """u <- u + lambda * theta_{t-1}: the ONE decay step; its place in the chain is the mode."""
    return replace(u, decay_coef=_add(u.decay_coef, ctx.weight_decay))


def scale_by_lr(u: Updates, ctx: StepContext) -> Updates:
    """u <- alpha * u (alpha = base learning rate, not scheduled)."""
    return Updates(u.direction, _mul(u.coef, ctx.lr), _mul(u.decay_coef, ctx.lr))


def scale_by_schedule(u: Updates, ctx: StepContext) -> Updates:
    """u <- -eta_t * u (eta_t = current lr / initial lr; the minus makes it a descent step)."""
    return Updates(u.direction, _mul(u.coef, -ctx.eta), _mul(u.decay_coef, -ctx.eta))


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
    for a constant schedule and differ when eta_t changes (tests/test_optim.py measures it).
    """
    g = materialize(u, ctx.params)
    mu, dampening = ctx.hyper["momentum"], ctx.hyper["dampening"]
    if mu == 0:
        return Updates(g)
    if "momentum_buffer" not in ctx.states[0]:
        for s, gi in zip(ctx.states, g, strict=True):
            s["momentum_buffer"] = gi.detach().clone()
        bufs = [s["momentum_buffer"] for s in ctx.states]
    else:
        bufs = [s["momentum_buffer"] for s in ctx.states]
        torch._foreach_mul_(bufs, mu)
        torch._foreach_add_(bufs, g, alpha=1.0 - dampening)
    if ctx.hyper["nesterov"]:
        return Updates(torch._foreach_add(g, bufs, alpha=mu))
    return Updates(bufs)


def adam(u: Updates, ctx: StepContext) -> Updates:
    """Adam as torch.optim.Adam: m <- b1*m + (1-b1)*g; v <- b2*v + (1-b2)*g^2;
    d = (m / (1 - b1^t)) / (sqrt(v) / sqrt(1 - b2^t) + eps), computed as
    sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps*sqrt(1 - b2^t)) (one pass less).
    In place in one fresh buffer: on a CPU, allocations cost more than passes."""
    g = materialize(u, ctx.params)
    beta1, beta2 = ctx.hyper["betas"]
    m = _state_list(ctx, "exp_avg", g)
    v = _state_list(ctx, "exp_avg_sq", g)
    torch._foreach_lerp_(m, g, 1.0 - beta1)
    torch._foreach_mul_(v, beta2)
    torch._foreach_addcmul_(v, g, g, value=1.0 - beta2)
    root_bc2 = (1.0 - beta2**ctx.step) ** 0.5
    if g is u.direction:  # g is p.grad: sqrt(v) needs a fresh buffer
        denom = torch._foreach_sqrt(v)
    else:  # g is l2's fresh g + lambda*theta, no longer needed: reuse it
        denom = g
        torch._foreach_copy_(denom, v)
        torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, ctx.hyper["eps"] * root_bc2)
    torch._foreach_reciprocal_(denom)
    torch._foreach_mul_(denom, m)
    return Updates(denom, coef=root_bc2 / (1.0 - beta1**ctx.step))


def rmsprop(u: Updates, ctx: StepContext) -> Updates:
    """RMSprop as torch.optim.RMSprop (not centered): v <- a*v + (1-a)*g^2;
    d = g / (sqrt(v) + eps); with momentum mu > 0: b <- mu*b + g / (sqrt(v) + eps), d = b."""
    g = materialize(u, ctx.params)
    smoothing, mu = ctx.hyper["alpha"], ctx.hyper["momentum"]
    v = _state_list(ctx, "square_avg", g)
    torch._foreach_mul_(v, smoothing)
    torch._foreach_addcmul_(v, g, g, value=1.0 - smoothing)
    avg = torch._foreach_sqrt(v)
    torch._foreach_add_(avg, ctx.hyper["eps"])
    torch._foreach_reciprocal_(avg)
    if mu == 0:
        torch._foreach_mul_(avg, g)
        return Updates(avg)
    bufs = _state_list(ctx, "momentum_buffer", g)
    torch._foreach_mul_(bufs, mu)
    torch._foreach_addcmul_(bufs, g, avg)
    return Updates(bufs)


DIRECTIONS: dict[str, Step] = {"sgd": sgd, "adam": adam, "rmsprop": rmsprop}
