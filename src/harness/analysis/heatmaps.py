"""The error surface over the (alpha, lambda) grid: paper Figs. 1-2 as heatmaps, and each
decoupled panel re-plotted in the paper's and PyTorch's lambda (written as PNG + PDF).

``plot_heatmaps``: one ``seaborn.heatmap`` panel per optimizer x decay mode on one shared colour
scale, the noise level in each title; on each panel the cell values, the chosen cell, the top
10, diverged and failed cells (``_marks``), and the basin ridge and damage frontier that
``stats.panel_fits`` finds (``_fit_marks``). ``plot_coordinates``: the same surface on the
same colour scale in the two coordinate systems of ``units``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from harness.analysis import frames, stats, units
from harness.analysis.figures import ERROR_LABEL, lam_label, save, tick_label, wrap

CMAP = "viridis"  # perceptual; low error = dark
CELL_IN = (0.5, 0.42)  # heatmap cell width, height (inches)
CIRCLE_PT = 0.88 * 72 * min(CELL_IN)  # top-10 circle diameter (points)
DECAY_NOTE = {"none": "no weight decay", "l2": "L2: g ← g + λθ",
              "decoupled": "decoupled: θ ← θ − η_t λ θ",
              "decoupled_lr": "lr-scaled (torch AdamW): θ ← θ − α η_t λ θ"}


def _norm(table: pd.DataFrame) -> tuple[Normalize, bool]:
    """One colour scale for all panels: from the best error to min(chance, 75th pct)."""
    ok = frames.ranked(table)
    values = 100 * ok.loc[~ok["diverged"], "test_error"].to_numpy(float)
    values = values if values.size else 100 * ok["test_error"].to_numpy(float)
    lo = float(values.min())
    hi = min(float(np.percentile(values, 75)), 100 * float(np.nanmax(table["chance"])))
    hi = max(hi, lo + 1.0)
    return Normalize(lo, hi), bool((100 * ok["test_error"] > hi).any())


def _layout(table: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Panel -> (row, col): columns are decay modes, rows the other panel keys; panels are
    packed row by row instead when that grid would be less than 60% full."""
    row_keys = [k for k in frames.panel_keys(table) if k != "decay"]
    firsts = table.drop_duplicates("panel")
    rows = list(dict.fromkeys(frames.panel_label(r, row_keys) for _, r in firsts.iterrows()))
    cols = [d for d in frames.ORDER["decay"] if d in set(firsts["decay"])]
    if len(firsts) >= 0.6 * len(rows) * len(cols):
        return {r["panel"]: (rows.index(frames.panel_label(r, row_keys)),
                             cols.index(r["decay"])) for _, r in firsts.iterrows()}
    width = min(len(firsts), 4)
    return {p: divmod(i, width) for i, p in enumerate(firsts["panel"])}


def _marks(ax, x: float, y: float, row, norm: Normalize, top: bool, best: bool, size: float):
    """Value (or 'div'/'fail'), contrast colour, top-10 circle, hatch for diverged."""
    if row.failed:
        ax.text(x, y, "fail", ha="center", va="center", fontsize=size, color="0.3")
        return
    r, g, b, _ = colormaps[CMAP](norm(100 * row.test_error))
    ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
    if row.diverged:
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, hatch="///",
                               edgecolor="0.35", linewidth=0))
    text = "div" if row.n_diverged == row.seeds else f"{100 * row.test_error:.1f}"
    ax.text(x, y, text, ha="center", va="center", fontsize=size + (1 if best else 0),
            color=ink, fontweight="bold" if best else "normal")
    if top:  # a marker stays round whatever the cell's aspect
        ax.scatter([x], [y], s=CIRCLE_PT**2, facecolors="none", edgecolors=ink, linewidths=1.3)


def _cell_xy(x: np.ndarray, y: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    """(log2 α, log2 λ) -> heatmap cell coordinates (columns: ascending α, centres at i + 0.5;
    rows: descending λ), interpolated between grid points."""
    return (np.interp(x, xs, np.arange(len(xs)) + 0.5),
            np.interp(y, ys[::-1], (np.arange(len(ys)) + 0.5)[::-1]))


def _fit_line(ax, fit: stats.Slope, xs: np.ndarray, ys: np.ndarray, label: str,
              **style) -> None:
    """A fitted line log2 λ = c + s·log2 α over the α grid, clipped to the λ grid."""
    x = np.linspace(xs.min(), xs.max(), 50)
    y = fit.intercept + fit.estimate * x
    keep = (y >= ys.min()) & (y <= ys.max())
    if keep.sum() >= 2:
        ax.plot(*_cell_xy(x[keep], y[keep], xs, ys), label=f"{label}, slope {fit.text()}",
                **style)


def _fit_marks(ax, fit: stats.PanelFits, xs: np.ndarray, ys: np.ndarray) -> None:
    """The fitted basin ridge (where determined); the damage frontier: in each α column a bar
    at the λ where the error first exceeds the column's best by the margin, and its
    least-squares line where determined; a legend below the panel."""
    if fit.basin.determined:
        _fit_line(ax, fit.basin, xs, ys, "fitted basin ridge", color="red", linestyle="--",
                  linewidth=1.4)
    if fit.frontier_points:
        cols, rows = _cell_xy(*np.array(fit.frontier_points).T, xs, ys)
        ax.hlines(rows, cols - 0.45, cols + 0.45, colors="orangered", linewidth=2.2,
                  label=f"damage frontier (+{100 * fit.margin:.1f} pts)")
    if fit.frontier.determined:
        _fit_line(ax, fit.frontier, xs, ys, "frontier fit", color="orangered", linestyle=":",
                  linewidth=1.4)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), fontsize=6, framealpha=0.8)


def heatmap_panel(ax, sub: pd.DataFrame, top: set, norm: Normalize, ylabel: str,
                  title: str, fit: stats.PanelFits | None = None) -> None:
    """One panel: seaborn heatmap of error (%) over the lambda x alpha grid, low lambda at the
    bottom, cell values printed, the chosen cell bold, the top 10 circled; with the panel's
    ``fit``, the basin ridge and the damage frontier drawn on it."""
    sub = sub[np.isfinite(sub["lr"]) & np.isfinite(sub["lam"])]  # unknown lambda: not drawn
    grid = sub.assign(err=np.where(sub["failed"], np.nan, 100 * sub["test_error"]))
    z = grid.pivot_table(index="lam", columns="lr", values="err", aggfunc="first",
                         dropna=False).sort_index(ascending=False)
    sns.heatmap(z, ax=ax, cmap=colormaps[CMAP].with_extremes(bad="0.85"), norm=norm, cbar=False,
                xticklabels=[tick_label(v) for v in z.columns], linewidths=0.5,
                yticklabels=[tick_label(v) for v in z.index], linecolor="white")
    ix = {v: i + 0.5 for i, v in enumerate(z.columns)}
    iy = {v: i + 0.5 for i, v in enumerate(z.index)}
    ranked = frames.ranked(sub)
    best = ranked[frames.selection_metric(sub)].idxmin() if not ranked.empty else None
    size = max(4.5, min(7.5, 56 / max(z.shape)))
    for row in sub.itertuples():
        _marks(ax, ix[row.lr], iy[row.lam], row, norm, (row.lr, row.lam) in top,
               row.Index == best, size)
    if fit is not None:
        _fit_marks(ax, fit, np.log2(z.columns.to_numpy(float)), np.log2(z.index.to_numpy(float)))
    ax.tick_params(labelsize=7, rotation=0)
    ax.set_xlabel("learning rate α (log scale)", fontsize=8)
    ax.set_ylabel(ylabel + " (log scale)", fontsize=8)
    ax.set_title(title, fontsize=8.5)


def _panel_title(sub: pd.DataFrame, noise: stats.Noise, fit: stats.PanelFits | None) -> str:
    """Panel, update rule, noise: the seed sd, or with one seed the basin fit's residual sd."""
    first = sub.iloc[0]
    level = noise.short()
    if fit is not None and not math.isfinite(noise.sigma) and math.isfinite(fit.basin.resid_sd):
        level += f"; basin fit residual sd {100 * fit.basin.resid_sd:.2f} pts"
    return f"{first['panel']}\n{DECAY_NOTE.get(first['decay'], first['decay'])}\n{level}"


def plot_heatmaps(table: pd.DataFrame, per_run: pd.DataFrame, out: Path) -> list[Path]:
    """Paper Figs. 1-2: test error over (alpha, lambda), one panel per optimizer x decay."""
    pos = _layout(table)
    nrows, ncols = max(p[0] for p in pos.values()) + 1, max(p[1] for p in pos.values()) + 1
    n_lr = table.groupby("panel")["lr"].nunique().max()
    n_lam = table.groupby("panel")["lam"].nunique().max()
    width = max(7.0, ncols * (1.2 + CELL_IN[0] * n_lr) + 1.2)
    height = max(4.5, nrows * (1.9 + CELL_IN[1] * n_lam) + 1.0)
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    norm, clipped = _norm(table)
    top = frames.top_k(table, 10, by=frames.selection_metric(table))
    for panel, (r, c) in pos.items():
        sub = table[table["panel"] == panel]  # circle the top 10 only if there are more
        chosen = top[top["panel"] == panel] if len(frames.ranked(sub)) > 10 else top[:0]
        runs = per_run[per_run["panel"] == panel]
        fit = stats.panel_fits(sub, runs) if (sub["lam"] > 0).any() else None
        noise = fit.noise if fit else stats.noise(runs)
        heatmap_panel(axes[r, c], sub, set(zip(chosen["lr"], chosen["lam"], strict=True)),
                      norm, lam_label(table), _panel_title(sub, noise, fit), fit)
    for ax in axes.flat:
        if not ax.has_data():
            ax.set_axis_off()
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), ax=axes, shrink=0.8,
                       extend="max" if clipped else "neither")
    bar.set_label(ERROR_LABEL)
    clip = f"; colours above {norm.vmax:.1f}% are clipped" if clipped else ""
    fig.suptitle(wrap(_heatmap_title(table, frames.selection_metric(table)) + clip, width),
                 fontsize=10)
    return save(fig, out, "heatmaps")


def _heatmap_title(table: pd.DataFrame, metric: str) -> str:
    def one(col: str) -> str:
        return ", ".join(str(v) for v in pd.unique(table[col]))

    on = "validation error" if metric == "val_error" else "test error"
    counts = sorted(pd.unique(table["seeds"]))
    seeds = "1 seed" if counts == [1] else \
        f"mean of {', '.join(str(v) for v in counts)} seeds"
    return (f"{one('study')}: {ERROR_LABEL} after {one('epochs')} epochs ({one('dataset')}, "
            f"{one('model')}, {one('schedule')} schedule), {seeds} per cell\n"
            "numbers = error in %; σ = seed-to-seed sd of a cell, pooled over the panel's "
            "cells with 2+ seeds (near each column's best where stated); circled = top-10 "
            f"of the panel by {on}; bold = chosen; hatched = diverged (chance); grey = failed; "
            "dashed = fitted basin ridge (where determined); "
            "orange bars = damage frontier (the λ where a column's error first exceeds its "
            "best by the margin; dotted = its fit where determined)")


def plot_coordinates(table: pd.DataFrame, out: Path) -> list[Path] | None:
    """Each decoupled / decoupled_lr panel in the paper's λ and in PyTorch's λ: the same
    surface in two coordinate systems (the grid is sheared: log2 λ_paper = log2 α + log2
    λ_torch). None if the study has no such panel."""
    subs = [table[table["panel"] == p] for p in frames.panels(table)]
    subs = [s[s["lam"] > 0] for s in subs if s["decay"].iloc[0] in units.DECOUPLED]
    subs = [s for s in subs if not s.empty]
    if not subs:
        return None
    norm, _ = _norm(table)
    fig = Figure(figsize=(9.5, 3.6 * len(subs) + 0.6), layout="constrained")
    axes = fig.subplots(len(subs), 2, squeeze=False)
    for row, sub in zip(axes, subs, strict=True):
        ok = frames.ranked(sub)
        for ax, to in zip(row, ("paper", "torch"), strict=True):
            lam = units.convert(ok["lam"].to_numpy(float), ok["lr"].to_numpy(float),
                                ok["decay"].iloc[0], to)
            x, y = np.log2(ok["lr"].to_numpy(float)), np.log2(lam)
            side = min(16.0, 190 / (np.ptp(y) + 1), 250 / (np.ptp(x) + 1))  # points
            ax.scatter(x, y, c=100 * ok["test_error"], cmap=CMAP, norm=norm, marker="s",
                       s=side**2, edgecolors="white", linewidths=0.5)
            here = "native grid" if units.native(ok["decay"].iloc[0]) == to else "re-plotted"
            ax.set(xlabel="log₂ α", ylabel=f"log₂ {units.COORDS[to]}",
                   title=f"{sub['panel'].iloc[0]} in {to} units ({here})")
            ax.grid(alpha=0.3)
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), ax=axes, shrink=0.8).set_label(
        ERROR_LABEL)
    fig.suptitle(wrap("One surface, two coordinate systems: λ_paper = α·λ_torch, so a "
                      "separable basin in one is a diagonal (slope −1) in the other", 9.5),
                 fontsize=10)
    return save(fig, out, "coordinates")
