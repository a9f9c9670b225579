"""What every report figure shares: the error and lambda axis labels, tick labels, titles
wrapped to the figure width, and the atomic PNG + PDF save.

The figures themselves: ``heatmaps`` (the error surface over the (alpha, lambda) grid: paper
Figs. 1-2 and the re-plot in the paper's and PyTorch's units) and ``curves`` (error against
epoch, against lambda, against the training budget). All use matplotlib's object API
(``Figure`` rendered by Agg; no pyplot global state) with seaborn drawing onto its axes.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from harness.analysis import frames
from harness.fsutil import atomic_write, atomic_write_text

ERROR_LABEL = "top-1 test error (%)"


def tick_label(x: float) -> str:
    """Mathtext ``2^k`` for powers of two (``2^-4.5`` on a half-octave grid), ``0``, else 3
    significant digits."""
    text = frames.fmt_value(x)
    return f"$2^{{{text[2:]}}}$" if text.startswith("2^") else text


def tick_labels(values) -> list[str]:
    """The tick labels of one axis: when every non-zero value is a power of two at half-octave
    resolution (within 0.7%, as a YAML decimal such as 0.0442 = 2^-4.5 is), every label reads
    as one (``2^-4.5``, never ``0.0442`` beside ``2^-4``); else each value as ``tick_label``."""
    vals = [float(v) for v in values]
    twice = [2 * math.log2(v) for v in vals if v > 0 and math.isfinite(v)]
    if twice and len(twice) == sum(v != 0 for v in vals) and \
            all(abs(t - round(t)) < 0.02 for t in twice):
        return ["0" if v == 0 else tick_label(2.0 ** (round(2 * math.log2(v)) / 2))
                for v in vals]
    return [tick_label(v) for v in vals]


def lam_label(table: pd.DataFrame) -> str:
    return "normalized weight decay λ_norm" if table["normalized"].any() else "weight decay λ"


def save(fig: Figure, out: Path, stem: str, caption: str) -> list[Path]:
    """PNG (150 dpi), PDF and ``<stem>.caption.txt`` (the figure's long explanation, which
    report.md prints under it: titles stay short), each written to a temporary file and moved
    into place; the PDF without a creation date, so the same data give the same bytes."""
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    for path in paths:
        fmt = path.suffix[1:]
        meta = {"CreationDate": None} if fmt == "pdf" else None
        atomic_write(path, lambda tmp, f=fmt, m=meta: fig.savefig(tmp, format=f, dpi=150,
                                                                 metadata=m))
    text = out / f"{stem}.caption.txt"
    atomic_write_text(text, caption.strip() + "\n")
    return [*paths, text]


def caption_of(figure: Path) -> str:
    """The caption written beside ``figure`` (``<stem>.caption.txt``), '' if none."""
    path = figure.with_name(figure.stem + ".caption.txt")
    return path.read_text().strip() if path.exists() else ""


def legend_below(fig: Figure, handles: list, labels: list[str], **kw) -> None:
    """One legend for the whole figure, below every axes (constrained layout makes room for
    it, so it covers no data and no label)."""
    if handles:
        longest = max(len(label) for label in labels) * 8 * 0.6 / 72 + 0.6  # inches a column
        fits = max(1, int(fig.get_figwidth() / longest))
        fig.legend(handles, labels, loc="outside lower center", fontsize=8,
                   ncols=min(len(handles), kw.pop("ncols", 3), fits), frameon=False, **kw)


def legend_entries(axes) -> tuple[list, list[str]]:
    """The distinct (by label) legend handles of ``axes``, in drawing order."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    return list(seen.values()), list(seen)


def title(text: str, width_in: float) -> str:
    """A short figure title, wrapped to the figure width (10 pt)."""
    return wrap(text, width_in)


def wrap(text: str, width_in: float, points: float = 10) -> str:
    """Wrap each line of a ``points`` pt text to ``width_in`` inches."""
    chars = max(12, int(width_in * 72 / (0.6 * points)))
    return "\n".join(textwrap.fill(line, chars, break_on_hyphens=False)
                     for line in text.splitlines())
