"""What every report figure shares: the error and lambda axis labels, tick labels, titles
wrapped to the figure width, one legend below the axes, the colour scale of the error
surface (``scale``), and the atomic PNG + PDF + caption save.

The figures themselves: ``heatmaps`` (the error surface over the (alpha, lambda) grid: paper
Figs. 1-2 and the re-plot in the paper's and PyTorch's units) and ``curves`` (error against
epoch, against lambda, against the training budget). All use matplotlib's object API
(``Figure`` rendered by Agg; no pyplot global state) with seaborn drawing onto its axes.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from harness.analysis import frames
from harness.fsutil import atomic_write, atomic_write_text

ERROR_LABEL = "top-1 test error (%)"
KNEE = 75  # percentile of the values shown where a long-tailed scale changes slope
OVER = "#f4a6a6"  # outliers above the colour scale (diverged, near chance): pink, not yellow
CMAP = "viridis"  # perceptual; low error = dark


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


@dataclasses.dataclass(frozen=True)
class Scale:
    """The one colour scale of a figure. ``norm`` covers every value shown but the
    ``outliers`` (cells with a seed that diverged or stayed at chance: drawn in the OVER
    colour, their value printed); where the values have a long tail (damaged cells far above
    the basin), it is linear in two pieces: half the colours up to the 75th percentile
    (``knee``), half above, so that both the basin and the damage stay readable."""

    norm: Normalize
    outliers: int
    knee: float | None = None

    @property
    def cmap(self):
        return colormaps[CMAP].with_extremes(bad="0.85", over=OVER)

    def note(self) -> str:
        """The colour bar's second line: what is clipped, or ''."""
        if not self.outliers:
            return ""
        return (f"▲ pink: {self.outliers} cell{'s' * (self.outliers > 1)} with a seed at "
                f"chance or diverged (> {self.norm.vmax:.1f}%), clipped")

    def colorbar(self, fig: Figure, axes) -> None:
        bar = fig.colorbar(ScalarMappable(norm=self.norm, cmap=self.cmap), ax=axes,
                           shrink=0.8, extend="max" if self.outliers else "neither")
        note = self.note()
        bar.set_label(ERROR_LABEL + (f"\n{note}" if note else ""), fontsize=9)
        if self.knee is not None:  # ticks on each linear piece; a line where the slope changes
            lo, hi = self.norm.vmin, self.norm.vmax
            below = MaxNLocator(4).tick_values(lo, self.knee)
            above = MaxNLocator(4).tick_values(self.knee, hi)
            ticks = sorted({round(float(t), 6) for t in (*below, *above) if lo <= t <= hi})
            gap = 0.07  # at least this much of the bar between two labelled ticks
            kept = [t for i, t in enumerate(ticks)
                    if i == 0 or self.norm(t) - self.norm(ticks[i - 1]) >= gap]
            bar.set_ticks(kept)
            bar.ax.axhline(self.knee, color="white", linewidth=1.0)
        bar.ax.tick_params(labelsize=8)


def scale(table: pd.DataFrame) -> Scale:
    """From the best error to the worst that is not an outlier (a cell with a seed that
    diverged or stayed at chance, `frames.at_chance`, or a mean near chance: >= frames.USABLE
    x chance); two linear pieces when the values above the 75th percentile span more than
    twice the range below it."""
    ok = frames.ranked(table)
    err = 100 * ok["test_error"].to_numpy(float)
    normal = (ok["n_at_chance"].to_numpy() == 0) & (err < 100 * frames.USABLE * ok["chance"])
    shown = err[normal] if normal.any() else err
    lo, hi = float(shown.min()), float(shown.max())
    hi = max(hi, lo + 1.0)
    outliers = int((err > hi).sum())
    knee = float(np.percentile(shown, KNEE))
    if knee - lo > 0.2 and hi - knee > 2 * (knee - lo):
        return Scale(TwoSlopeNorm(knee, lo, hi), outliers, knee)
    return Scale(Normalize(lo, hi), outliers)
