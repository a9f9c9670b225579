"""The paper's units and PyTorch's, side by side, and lambda as an EMA timescale.

Per step t (eta_t = schedule multiplier, alpha = base learning rate):
  decoupled    (paper SGDW/AdamW):   theta <- theta - eta_t * lambda_paper * theta
  decoupled_lr (torch.optim.AdamW):  theta <- theta - alpha * eta_t * lambda_torch * theta
so decoupled(lambda) == decoupled_lr(lambda / alpha) exactly: lambda_paper = alpha *
lambda_torch. Re-plotting a panel in the other coordinates is the same surface in another
coordinate system (its ridge slope shifts by exactly +1: slope_paper = slope_torch + 1);
a decoupled panel and a decoupled_lr panel are two measurements of one family of updates,
which must agree wherever their converted grids meet. (Normalized decay multiplies both by
the same sqrt(b / (B T)), so the identity holds for lambda_norm too.)

EMA timescale (Wang & Aitchison, ICML 2025): the decayed weights are an exponential moving
average with tau_iter = 1 / (alpha * lambda_torch) steps, i.e. tau_epoch = b / (B * alpha *
lambda_torch) epochs (b = batch size, B = training points) = b / (B * lambda_paper). Carrying
tau_epoch (not lambda) to another dataset size keeps the averaging window.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

DECOUPLED = ("decoupled", "decoupled_lr")
COORDS = {"paper": "paper λ (decoupled: θ ← θ − η_t λ θ)",
          "torch": "torch λ (AdamW: θ ← θ − α η_t λ θ)"}


def native(decay: str) -> str:
    """The coordinate system a decay mode's own grid is in."""
    return "torch" if decay == "decoupled_lr" else "paper"


def convert(lam: np.ndarray | float, lr: np.ndarray | float, decay: str, to: str):
    """A decoupled or decoupled_lr panel's lambda in ``to`` ('paper' or 'torch') units."""
    if decay not in DECOUPLED:
        raise ValueError(f"decay={decay!r} has no paper/torch coordinates; choose one of "
                         f"{', '.join(DECOUPLED)}")
    frm = native(decay)
    if frm == to:
        return lam
    return lam * lr if to == "paper" else lam / lr


def tau_epochs(cells: pd.DataFrame) -> pd.Series:
    """EMA timescale of the decay in epochs, b / (B * lambda_paper), for decoupled cells
    (lambda = the weight_decay actually used, after normalization); NaN for others."""
    lam_paper = [convert(wd, lr, d, "paper") if d in DECOUPLED else math.nan
                 for wd, lr, d in zip(cells["weight_decay"], cells["lr"], cells["decay"],
                                      strict=True)]
    b, n = cells["batch_size"].astype(float), cells["n_train"].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = b / (n * np.asarray(lam_paper, dtype=float))
    return pd.Series(np.where(np.isfinite(tau) & (tau > 0), tau, np.nan), index=cells.index)


def _key(lr: float, lam: float) -> tuple[float, float]:
    return round(math.log2(lr), 6), round(math.log2(lam), 6)


def overlap(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Cells of two panels (one decoupled, one decoupled_lr, same optimizer) that are the same
    update once both are in paper units: columns lr, lam_paper, error_a, error_b, difference."""
    rows = {}
    for tag, panel in (("a", a), ("b", b)):
        for r in panel[panel["lam"] > 0].itertuples():
            lam = convert(r.lam, r.lr, r.decay, "paper")
            rows.setdefault(_key(r.lr, lam), {"lr": r.lr, "lam_paper": lam})[
                f"error_{tag}"] = r.test_error
    out = pd.DataFrame([v for v in rows.values() if "error_a" in v and "error_b" in v],
                       columns=["lr", "lam_paper", "error_a", "error_b"])
    out["difference"] = out["error_a"] - out["error_b"]
    return out
