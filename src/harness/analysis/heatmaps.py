"""The error surface over the (alpha, lambda) grid: paper Figs. 1-2 as heatmaps, and each
decoupled panel re-plotted in the paper's and PyTorch's lambda (written as PNG + PDF + caption).

``plot_heatmaps``: one ``seaborn.heatmap`` panel per optimizer x decay mode on one shared colour
scale (``figures.scale``), the method's name (``names``) and noise level in each title; on each
panel the cell values, the best cell, the top 10, diverged and failed cells and the seeds of
a multi-seed cell (``_marks``), and the basin ridge and damage frontier that
``stats.panel_fits`` finds (``_fit_marks``), explained by one legend below the figure and the
caption. ``plot_coordinates``: the same surface on the same colour scale in the two coordinate
systems of ``units``."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from harness.analysis import frames, names, stats, units
from harness.analysis.figures import (
    CMAP,
    ERROR_LABEL,
    KNEE,
    OVER,
    Scale,
    lam_label,
    legend_below,
    legend_entries,
    save,
    scale,
    tick_labels,
    wrap,
)

CELL_IN = (0.5, 0.42)  # heatmap cell width, height (inches)
PANEL_MIN_IN = 2.8  # narrowest panel (inches): room for its title
CIRCLE_PT = 0.88 * 72 * min(CELL_IN)  # top-10 circle diameter (points)
LEGEND = {"fitted basin ridge": "fitted basin ridge",
          "damage frontier": "damage frontier (per α column)",
          "frontier fit": "least-squares fit of the damage frontier"}


def _layout(table: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Panel -> (row, col): columns are decay modes, rows the other panel keys; panels are
    packed row by row instead when that grid would be less than 60% full."""
    row_keys = [k for k in frames.panel_keys(table) if k != "decay"]
    firsts = table.drop_duplicates("panel")
    rows = list(dict.fromkeys(frames.panel_label(r, row_keys) for _, r in firsts.iterrows()))
    cols = [d for d in frames.ORDER["decay"] if d in set(firsts["decay"])]
    if len(cols) > 1 and len(firsts) >= 0.6 * len(rows) * len(cols):
        return {r["panel"]: (rows.index(frames.panel_label(r, row_keys)),
                             cols.index(r["decay"])) for _, r in firsts.iterrows()}
    width = min(len(firsts), 4)
    return {p: divmod(i, width) for i, p in enumerate(firsts["panel"])}


def _marks(ax, x: float, y: float, row, norm: Normalize, top: bool, best: bool, size: float):
    """Value (or 'div'/'fail'), contrast colour, top-10 circle, hatch where a seed diverged or
    stayed at chance, and the number of seeds in the upper right corner of a cell with more
    than one."""
    if row.failed:
        ax.text(x, y, "fail", ha="center", va="center", fontsize=size, color="0.3")
        return
    value = 100 * row.test_error
    r, g, b, _ = colormaps[CMAP](norm(value)) if value <= norm.vmax else (1, 1, 1, 1)
    ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
    if row.n_at_chance:
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, hatch="///",
                               edgecolor="0.35", linewidth=0))
    text = "div" if row.n_diverged == row.seeds else f"{value:.1f}"
    ax.text(x, y, text, ha="center", va="center", fontsize=size + (1 if best else 0),
            color=ink, fontweight="bold" if best else "normal")
    if row.seeds > 1:
        ax.text(x + 0.45, y - 0.44, f"{int(row.seeds)}", ha="right", va="top", color=ink,
                fontsize=max(4.0, size - 2.5), gid="seeds")
    if top:  # a marker stays round whatever the cell's aspect
        ax.scatter([x], [y], s=CIRCLE_PT**2, facecolors="none", edgecolors=ink, linewidths=1.3,
                   label="top 10 of the panel")


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
    least-squares line where determined. Labelled for the figure's one legend (``LEGEND``)."""
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


def heatmap_panel(ax, sub: pd.DataFrame, top: set, norm: Normalize, ylabel: str,
                  title: str, fit: stats.PanelFits | None = None,
                  xlabel: str = "learning rate α (log scale)", cmap=None) -> None:
    """One panel: seaborn heatmap of error (%) over the lambda x alpha grid, low lambda at the
    bottom, cell values printed, the best cell by the selection metric bold, the top 10
    circled, the seeds of a multi-seed cell in its corner; with the panel's ``fit``, the basin
    ridge and the damage frontier drawn on it. An empty label is not drawn (the figure labels
    its axes once)."""
    sub = sub[np.isfinite(sub["lr"]) & np.isfinite(sub["lam"])]  # unknown lambda: not drawn
    grid = sub.assign(err=np.where(sub["failed"], np.nan, 100 * sub["test_error"]))
    z = grid.pivot_table(index="lam", columns="lr", values="err", aggfunc="first",
                         dropna=False).sort_index(ascending=False)
    cmap = cmap if cmap is not None else colormaps[CMAP].with_extremes(bad="0.85", over=OVER)
    sns.heatmap(z, ax=ax, cmap=cmap, norm=norm, cbar=False, linewidths=0.5,
                xticklabels=tick_labels(z.columns), yticklabels=tick_labels(z.index),
                linecolor="white")
    ix = {v: i + 0.5 for i, v in enumerate(z.columns)}
    iy = {v: i + 0.5 for i, v in enumerate(z.index)}
    ranked = frames.ranked(sub)
    best = ranked[frames.selection_metric(sub)].idxmin() if not ranked.empty else None
    size = 7.0  # a cell is CELL_IN whatever the grid: the figure grows with it
    for row in sub.itertuples():
        _marks(ax, ix[row.lr], iy[row.lam], row, norm, (row.lr, row.lam) in top,
               row.Index == best, size)
    if fit is not None:
        _fit_marks(ax, fit, np.log2(z.columns.to_numpy(float)), np.log2(z.index.to_numpy(float)))
    ax.tick_params(labelsize=7, rotation=0)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel + (" (log scale)" if ylabel and len(z.index) > 1 else ""), fontsize=8)
    ax.set_title(title, fontsize=8.5)


def _panel_title(sub: pd.DataFrame, noise: stats.Noise, fit: stats.PanelFits | None,
                 width_in: float) -> str:
    """The method's name and the noise (the seed sd, or with one seed the basin fit's residual
    sd), wrapped to the panel's width."""
    level = noise.short()
    if fit is not None and not math.isfinite(noise.sigma) and math.isfinite(fit.basin.resid_sd):
        level = f"1 seed; fit residual sd {100 * fit.basin.resid_sd:.2f} pts"
    return wrap(f"{names.panel(sub['panel'].iloc[0])}\n{level}", width_in, 8.5)


def _panel_caption(sub: pd.DataFrame, fit: stats.PanelFits | None) -> str:
    first = sub.iloc[0]
    text = f"{names.panel(first['panel'])} ({names.RULE.get(first['decay'], first['decay'])})"
    if fit is None:
        return text + "."
    return (text + f": basin ridge slope {fit.basin.text()}; damage frontier at a margin of "
            f"+{100 * fit.margin:.1f} pts, its slope {fit.frontier.text()}.")


def plot_heatmaps(table: pd.DataFrame, per_run: pd.DataFrame, out: Path) -> list[Path]:
    """Paper Figs. 1-2: test error over (alpha, lambda), one panel per optimizer x decay."""
    pos = _layout(table)
    nrows, ncols = max(p[0] for p in pos.values()) + 1, max(p[1] for p in pos.values()) + 1
    n_lr = table.groupby("panel")["lr"].nunique().max()
    n_lam = table.groupby("panel")["lam"].nunique().max()
    panel_in = max(PANEL_MIN_IN, 0.8 + CELL_IN[0] * n_lr)
    title = _heatmap_title(table)
    width = max(ncols * panel_in + 2.2, max(map(len, title.splitlines())) * 0.6 * 10 / 72 + 0.5)
    height = max(4.0, nrows * (1.5 + CELL_IN[1] * n_lam) + 1.6)
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    colours = scale(table)
    top = frames.top_k(table, 10, by=frames.selection_metric(table))
    captions = []
    for panel, (r, c) in pos.items():
        sub = table[table["panel"] == panel]  # circle the top 10 only if there are more
        chosen = top[top["panel"] == panel] if len(frames.ranked(sub)) > 10 else top[:0]
        runs = per_run[per_run["panel"] == panel]
        fit = stats.panel_fits(sub, runs) if (sub["lam"] > 0).any() else None
        noise = fit.noise if fit else stats.noise(runs)
        heatmap_panel(axes[r, c], sub, set(zip(chosen["lr"], chosen["lam"], strict=True)),
                      colours.norm, "", _panel_title(sub, noise, fit, panel_in - 0.5), fit,
                      cmap=colours.cmap)
        captions.append(_panel_caption(sub, fit))
    for ax in axes.flat:
        if not ax.has_data():
            ax.set_axis_off()
    colours.colorbar(fig, axes)
    fig.supylabel(lam_label(table) + " (log scale)", fontsize=9)
    handles, labels = legend_entries(axes.flat)
    generic = [next((v for k, v in LEGEND.items() if lab.startswith(k)), lab) for lab in labels]
    keep = dict(zip(generic, handles, strict=True))  # one entry per kind of mark
    if "top 10 of the panel" in keep:  # its circles are drawn in the cell's ink: show black
        keep["top 10 of the panel"] = Line2D([], [], marker="o", markersize=9, linestyle="",
                                             markerfacecolor="none", markeredgecolor="black")
    legend_below(fig, list(keep.values()), list(keep), ncols=4)
    fig.suptitle(title, fontsize=10)
    return save(fig, out, "heatmaps", _heatmap_caption(table, colours, captions))


def _heatmap_title(table: pd.DataFrame) -> str:
    """Short: the study, the error and what it was measured on."""
    counts = sorted(int(v) for v in pd.unique(table["seeds"]))
    seeds = f"{counts[0]} seed{'s' * (counts[0] > 1)}" if len(counts) == 1 else \
        f"{counts[0]}-{counts[-1]} seeds"
    epochs = ", ".join(names.epochs(e) for e in pd.unique(table["epochs"]))
    return (f"{ERROR_LABEL[0].upper()}{ERROR_LABEL[1:]} after {epochs}\n"
            f"{names.values(table['dataset'])}, {names.values(table['model'])}, "
            f"{names.values(table['schedule'])} schedule; {seeds} per cell")


def _heatmap_caption(table: pd.DataFrame, colours: Scale, panels: list[str]) -> str:
    on = "validation error" if frames.selection_metric(table) == "val_error" else "test error"
    counts = sorted(int(v) for v in pd.unique(table["seeds"]))
    seeds = "one seed per cell" if counts == [1] else \
        f"the mean over {', '.join(str(v) for v in counts)} seeds per cell"
    lo, hi = colours.norm.vmin, colours.norm.vmax
    clipped = (f" Colours cover every value shown ({lo:.1f}-{hi:.1f}%)"
               + (f", linear in two pieces: half the colours up to {colours.knee:.1f}% (the "
                  f"{KNEE}th percentile, a white line on the colour bar), half above it"
                  if colours.knee is not None else "")
               + (f"; {colours.outliers} cell(s) with a seed that diverged or stayed at "
                  "chance are drawn in pink above the scale, their value printed."
                  if colours.outliers else "."))
    return (f"{names.values(table['study'])}: {_heatmap_title(table).replace(chr(10), '; ')}. "
            "Each panel is one method over the grid of learning rate "
            f"α and weight decay λ; the number in a cell is its final {ERROR_LABEL}, {seeds}; a "
            "small number in a cell's corner is its seeds where more than one. σ is the "
            "seed-to-seed sd of a cell, pooled over the panel's cells with 2+ seeds (near each "
            f"column's best where stated). Circled: the panel's top 10 by {on}; bold: the "
            f"panel's best by {on}, mean over its seeds (a registered study's claims choose "
            "by their own rule, which the report's claims name); hatched: a seed diverged "
            "(counted at chance) or did not train (its final error at or above "
            f"{100 * frames.USABLE:.0f}% of chance); grey: failed. Dashed red: the fitted basin "
            "ridge (where determined); orange bars: the damage frontier, the λ where a "
            "column's error first exceeds its best by the margin; dotted: its "
            "least-squares fit (where determined)." + clipped + "\n\n"
            + "\n".join(f"- {line}" for line in panels))


def plot_coordinates(table: pd.DataFrame, out: Path) -> list[Path] | None:
    """Each decoupled / decoupled_lr panel in the paper's λ and in PyTorch's λ: the same
    surface in two coordinate systems (the grid is sheared: log2 λ_paper = log2 α + log2
    λ_torch). None if the study has no such panel."""
    subs = [table[table["panel"] == p] for p in frames.panels(table)]
    subs = [s[s["lam"] > 0] for s in subs if s["decay"].iloc[0] in units.DECOUPLED]
    subs = [s for s in subs if not frames.ranked(s).empty]  # a panel of failed cells: none
    if not subs:
        return None
    colours = scale(table)  # the heatmaps' scale; its outliers counted among these cells
    shown = 100 * pd.concat([frames.ranked(s) for s in subs])["test_error"].to_numpy(float)
    colours = dataclasses.replace(colours, outliers=int((shown > colours.norm.vmax).sum()))
    fig = Figure(figsize=(9.5, 3.6 * len(subs) + 1.0), layout="constrained")
    axes = fig.subplots(len(subs), 2, squeeze=False)
    for row, sub in zip(axes, subs, strict=True):
        ok = frames.ranked(sub)
        lam_name = "λ_norm" if bool(sub["normalized"].iloc[0]) else "λ"  # normalized: λ_norm's
        for ax, to in zip(row, ("paper", "torch"), strict=True):
            lam = units.convert(ok["lam"].to_numpy(float), ok["lr"].to_numpy(float),
                                ok["decay"].iloc[0], to)
            x, y = np.log2(ok["lr"].to_numpy(float)), np.log2(lam)
            side = min(16.0, 190 / (np.ptp(y) + 1), 250 / (np.ptp(x) + 1))  # points
            ax.scatter(x, y, c=100 * ok["test_error"], cmap=colours.cmap, norm=colours.norm,
                       marker="s", s=side**2, edgecolors="white", linewidths=0.5)
            here = "native grid" if units.native(ok["decay"].iloc[0]) == to else "re-plotted"
            ax.set_xlabel("log₂ α", fontsize=9)
            ax.set_ylabel(f"log₂ {lam_name} ({to} units)", fontsize=9)
            ax.set_title(wrap(f"{names.panel(sub['panel'].iloc[0])}: {to} units ({here})",
                              3.6, 9), fontsize=9)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=8)
            for axis, values, limits in ((ax.xaxis, x, ax.set_xlim), (ax.yaxis, y, ax.set_ylim)):
                axis.set_major_locator(MaxNLocator(integer=True))
                if np.ptp(values) < 2:  # one α (or λ): an integer axis around it
                    limits(np.floor(values.min()) - 1, np.ceil(values.max()) + 1)
    colours.colorbar(fig, axes)
    fig.suptitle("One surface, two coordinate systems: λ_paper = α·λ_torch", fontsize=10)
    caption = ("Each decoupled panel in the paper's units (λ_paper: θ ← θ − η_t λ θ) and in "
               "PyTorch's (λ_torch: torch.optim.AdamW, θ ← θ − α η_t λ θ); a square is a cell "
               "coloured by its final " + ERROR_LABEL + ". Since λ_paper = α·λ_torch, the grid "
               "of one is sheared in the other, and a basin that is separable (slope 0) in one "
               "is a diagonal (slope −1) in the other.")
    if any(bool(s["normalized"].iloc[0]) for s in subs):
        caption += (" A panel with normalized decay is drawn in λ_norm, for which the same "
                    "identity holds (both units scale by √(b/(B·T))).")
    if colours.outliers:
        caption += (f" {colours.outliers} cell(s) with a seed that diverged or stayed at "
                    f"chance, above {colours.norm.vmax:.1f}%, are drawn in pink above the "
                    "colour scale.")
    return save(fig, out, "coordinates", caption)
