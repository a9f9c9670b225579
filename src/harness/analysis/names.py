"""The one table of method names readers know (Adam+L2, AdamW, SGD+L2, SGDW, ...), used by
every legend, title and caption of the figures and by report.md.

A *panel* (``frames.panel_label``, e.g. ``"adam / decoupled / cosine"``) stays the study's
internal key (cells.csv); ``panel`` turns it into what a reader sees (``"AdamW / cosine"``).
"""

from __future__ import annotations

import pandas as pd

OPTIMIZER = {"adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop"}
METHOD = {  # (optimizer, decay mode) -> display name
    ("adam", "none"): "Adam", ("adam", "l2"): "Adam+L2", ("adam", "decoupled"): "AdamW",
    ("adam", "decoupled_lr"): "PyTorch AdamW (decoupled_lr)",
    ("sgd", "none"): "SGD", ("sgd", "l2"): "SGD+L2", ("sgd", "decoupled"): "SGDW",
    ("sgd", "decoupled_lr"): "SGDW (decoupled_lr)",
    ("rmsprop", "none"): "RMSprop", ("rmsprop", "l2"): "RMSprop+L2",
    ("rmsprop", "decoupled"): "RMSpropW", ("rmsprop", "decoupled_lr"): "RMSpropW (decoupled_lr)",
}
RULE = {"none": "no weight decay", "l2": "L2: g ← g + λθ",
        "decoupled": "decoupled: θ ← θ − η_t λ θ",
        "decoupled_lr": "lr-scaled (torch.optim.AdamW): θ ← θ − α η_t λ θ"}


def method(optimizer: str, decay: str) -> str:
    """``("adam", "decoupled")`` -> ``"AdamW"``; an unknown pair as ``"optimizer / decay"``."""
    return METHOD.get((str(optimizer), str(decay)), f"{optimizer} / {decay}")


def optimizer(name: str) -> str:
    return OPTIMIZER.get(str(name), str(name))


def epochs(n: int | float) -> str:
    """``1 epoch``, ``12 epochs``."""
    n = int(n)
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def panel(label: str) -> str:
    """A panel key (``"sgd / l2 / cosine / 100 ep"``) as a reader's label
    (``"SGD+L2 / cosine / 100 epochs"``)."""
    parts = str(label).split(" / ")
    if len(parts) < 2:
        return str(label)
    rest = [epochs(p[:-3]) if p.endswith(" ep") and p[:-3].isdigit() else p for p in parts[2:]]
    return " / ".join([method(parts[0], parts[1]), *rest])


def panels(table: pd.DataFrame) -> pd.Series:
    """The display label of each row's panel."""
    return table["panel"].map(panel)


def values(series: pd.Series) -> str:
    """The distinct values of a column, joined: ``"fashion_mnist"``, ``"2, 4"``."""
    return ", ".join(str(v) for v in pd.unique(series))
