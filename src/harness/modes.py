"""The optimizers, their hyperparameters and the decay modes: names free of torch.

An optimizer is two things: its YAML, `configs/optimizer/<name>.yaml` (its name, alpha and its
hyperparameters with their values), and its direction d(.) in `harness.optim_steps.DIRECTIONS`
(the math). Adding one is that file and that function; the names below are read from the
YAML files (a test checks they match DIRECTIONS). `harness.optim` builds them,
`harness.config` validates against them, and `harness.analysis` checks parquet files against
them without importing torch.

    optimizer  hyperparameters (torch.optim's names and meaning)
    adam       betas (beta1, beta2), eps: m, v EMAs of g, g^2; d = m_hat/(sqrt(v_hat) + eps)
    rmsprop    alpha (smoothing of v, not the lr), eps, momentum
    sgd        momentum mu, dampening, nesterov: b <- mu*b + (1 - dampening)*g

    decay mode     update (alpha = optimizer.lr, eta_t = schedule multiplier, lambda = weight_decay)
    none           no decay
    l2             g <- g + lambda * theta_{t-1}; the optimizer's moments see it
    decoupled      theta <- theta - eta_t * lambda * theta_{t-1}          (the paper's SGDW/AdamW)
    decoupled_lr   theta <- theta - alpha * eta_t * lambda * theta_{t-1}  (torch.optim.AdamW)
"""

from __future__ import annotations

import importlib.util
from importlib.resources import files
from pathlib import Path

import yaml


def _optimizer_yamls() -> dict[str, tuple[str, ...]]:
    """name -> its hyperparameter keys (every key but name and lr), from the packaged YAML (or
    configs/ beside src/ in a checkout on PYTHONPATH that was never installed)."""
    if importlib.util.find_spec("harness.configs") is not None:
        folder = files("harness.configs") / "optimizer"
    else:
        folder = Path(__file__).resolve().parents[2] / "configs" / "optimizer"
    out = {}
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.name.endswith(".yaml"):
            spec = yaml.safe_load(path.read_text())
            out[spec["name"]] = tuple(k for k in spec if k not in ("name", "lr"))
    return out


HYPERPARAMETERS: dict[str, tuple[str, ...]] = _optimizer_yamls()
OPTIMIZERS = tuple(HYPERPARAMETERS)
DECAY_MODES = ("none", "l2", "decoupled", "decoupled_lr")
