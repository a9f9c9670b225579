"""What every report figure shares: the error and lambda axis labels, tick labels, titles
wrapped to the figure width, and the atomic PNG + PDF save.

The figures themselves: ``heatmaps`` (the error surface over the (alpha, lambda) grid: paper
Figs. 1-2 and the re-plot in the paper's and PyTorch's units) and ``curves`` (error against
epoch, against lambda, against the training budget). All use matplotlib's object API
(``Figure`` rendered by Agg; no pyplot global state) with seaborn drawing onto its axes.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from harness.analysis import frames
from harness.fsutil import atomic_write

ERROR_LABEL = "top-1 test error (%)"


def tick_label(x: float) -> str:
    """Mathtext ``2^k`` for powers of two, ``0``, else 3 significant digits."""
    text = frames.fmt_value(x)
    return f"$2^{{{text[2:]}}}$" if text.startswith("2^") else text


def lam_label(table: pd.DataFrame) -> str:
    return "normalized weight decay λ_norm" if table["normalized"].any() else "weight decay λ"


def save(fig: Figure, out: Path, stem: str) -> list[Path]:
    """PNG (150 dpi) and PDF, each written to a temporary file and moved into place; the PDF
    without a creation date, so the same data give the same bytes."""
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    for path in paths:
        fmt = path.suffix[1:]
        meta = {"CreationDate": None} if fmt == "pdf" else None
        atomic_write(path, lambda tmp, f=fmt, m=meta: fig.savefig(tmp, format=f, dpi=150,
                                                                 metadata=m))
    return paths


def wrap(text: str, width_in: float) -> str:
    """Wrap each line of a 10 pt title to the figure width."""
    return "\n".join(textwrap.fill(line, int(width_in * 12)) for line in text.splitlines())
