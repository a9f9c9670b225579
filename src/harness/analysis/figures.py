"""Report figures (PNG + PDF), written atomically: heatmaps, learning curves, decay curves,
coordinates, transfer.

matplotlib's object API (``Figure`` rendered by Agg; no pyplot global state) with seaborn
drawing onto its axes: ``seaborn.heatmap`` for the (alpha, lambda) grids of paper Figs. 1-2
(one shared colour scale, the noise level in each title) and ``seaborn.lineplot`` for the
learning curves of Fig. 3 and the decay curves (error against lambda at one alpha; mean
over seeds with a +-1 sd band, every seed a dot).
"""

from __future__ import annotations

import math
import textwrap
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
from harness.fsutil import atomic_write

CMAP = "viridis"  # perceptual; low error = dark
ERROR_LABEL = "top-1 test error (%)"
CELL_IN = (0.5, 0.42)  # heatmap cell width, height (inches)
CIRCLE_PT = 0.88 * 72 * min(CELL_IN)  # top-10 circle diameter (points)
DECAY_NOTE = {"none": "no weight decay", "l2": "L2: g ← g + λθ",
              "decoupled": "decoupled: θ ← θ − η_t λ θ",
              "decoupled_lr": "lr-scaled (torch AdamW): θ ← θ − α η_t λ θ"}


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


def plot_learning_curves(runs: pd.DataFrame, table: pd.DataFrame, out: Path) -> list[Path]:
    """Paper Fig. 3: train loss and test error per epoch of each panel's chosen cell, the
    mean over its seeds with a +-1 sd band (seaborn.lineplot)."""
    frames = []
    for _, best in frames.best_cells(table).iterrows():
        rows = runs[runs["run_id"].isin(best["run_ids"].split(";")) & (runs["epoch"] >= 1)]
        label = (f"{best['panel']} (α={tick_label(best['lr'])}, λ={tick_label(best['lam'])}, "
                 f"{best['seeds']} seed{'s' * (best['seeds'] > 1)})")
        frames.append(rows.assign(cell=label, test_pct=100 * rows["test_error"].astype(float)))
    data = pd.concat(frames, ignore_index=True)
    fig = Figure(figsize=(11.5, 4.4), layout="constrained")
    loss_ax, err_ax = fig.subplots(1, 2)
    palette = sns.color_palette("tab10", data["cell"].nunique())
    common = {"x": "epoch", "hue": "cell", "errorbar": "sd", "marker": "o", "markersize": 4,
              "palette": palette}
    sns.lineplot(data=data, y="train_loss", ax=loss_ax, legend=False, **common)
    sns.lineplot(data=data.dropna(subset=["test_pct"]), y="test_pct", ax=err_ax, **common)
    loss_ax.set_yscale("log")
    loss_ax.set(xlabel="epoch", ylabel="train loss (cross-entropy, log scale)",
                title="training loss, chosen cell of each panel")
    err_ax.set(xlabel="epoch", ylabel=ERROR_LABEL, title="test error (band: ±1 sd over seeds)")
    for ax in (loss_ax, err_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    err_ax.legend(fontsize=7, loc="upper right", title=None)
    return save(fig, out, "learning_curves")


MAX_CURVE_ALPHAS = 3  # decay curves for optimizers with at most this many alphas


def plot_decay_curves(per_run: pd.DataFrame, table: pd.DataFrame, out: Path) -> list[Path] | None:
    """Claim 2's picture: final test error against λ, one axis per (optimizer, α), every decay
    mode of that optimizer on it (its own λ unit: L2 in the gradient, decoupled per step), the
    seed mean ± 1 sd (seaborn.lineplot) over a dot per seed, and λ = 0 as a band (mean ± 1
    sd over its seeds). None when no optimizer has decayed cells at 1..MAX_CURVE_ALPHAS α
    (a heatmap then shows more) or the study varies schedule, epochs, model or dataset."""
    runs = per_run[np.isfinite(per_run["test_error"].astype(float))]
    runs = runs.assign(test_pct=100 * runs["test_error"].astype(float))
    extra = [k for k in frames.panel_keys(runs) if k not in ("optimizer", "decay")]
    if extra:  # schedules or budgets side by side: the heatmaps and transfer figure show them
        return None
    axes_of = [(opt, lr) for opt, g in runs.groupby("optimizer", sort=False)
               if (g["lam"] > 0).any() and g["lr"].nunique() <= MAX_CURVE_ALPHAS
               for lr in sorted(g.loc[g["lam"] > 0, "lr"].unique())]
    if not axes_of:
        return None
    width = max(6.0, 5.2 * len(axes_of))
    fig = Figure(figsize=(width, 4.2), layout="constrained")
    modes = sorted({d for d in runs["decay"] if d != "none"})
    palette = dict(zip(modes, sns.color_palette("tab10", len(modes)), strict=True))
    for ax, (opt, lr) in zip(fig.subplots(1, len(axes_of), squeeze=False)[0], axes_of,
                             strict=True):
        here = runs[(runs["optimizer"] == opt) & (runs["lr"] == lr)]
        zero = here[here["lam"] == 0]["test_pct"]
        if len(zero):
            mean, sd = zero.mean(), zero.std(ddof=1) if len(zero) > 1 else 0.0
            ax.axhspan(mean - sd, mean + sd, color="0.5", alpha=0.2, lw=0)
            ax.axhline(mean, color="0.35", ls="--", lw=1.2,
                       label=f"λ = 0: {mean:.2f}% ± {sd:.2f} ({len(zero)} seeds)")
        decayed = here[here["lam"] > 0]
        for mode, g in decayed.groupby("decay", sort=False):
            ax.scatter(g["lam"], g["test_pct"], s=14, alpha=0.45, color=palette[mode])
        sns.lineplot(data=decayed, x="lam", y="test_pct", hue="decay", palette=palette,
                     errorbar="sd", err_style="bars", marker="o", markersize=6, ax=ax,
                     err_kws={"capsize": 3})
        ax.set_xscale("log", base=2)
        _clip_high(ax, decayed, here["test_pct"].min())
        ax.set(xlabel=lam_label(table) + " (each mode in its own unit)", ylabel=ERROR_LABEL,
               title=f"{opt} at α = {tick_label(lr)}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title=None)
    fig.suptitle(wrap("Test error against weight decay: line = mean ± 1 sd over seeds, dots "
                      "= seeds, grey band = no decay (mean ± 1 sd)", width), fontsize=10)
    return save(fig, out, "decay_curves")


def _clip_high(ax, decayed: pd.DataFrame, low: float, span: float = 8.0) -> None:
    """Keep the y axis to `span` points above the best run, so the differences near the
    optimum stay readable; a cell mean above it is written at the top edge instead."""
    means = decayed.groupby(["decay", "lam"])["test_pct"].mean()
    top = low + span
    if means.max() <= top:
        return
    ax.set_ylim(top=top, bottom=max(0.0, low - 1.0))
    for (_, lam), mean in means[means > top].items():
        ax.annotate(f"{mean:.1f}% ↑", (lam, top), xytext=(0, -12), textcoords="offset points",
                    ha="center", fontsize=8)


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


def plot_transfer(table: pd.DataFrame, out: Path) -> list[Path]:
    """Final error vs lambda_norm, one line per epoch budget, one axis per panel sans epochs."""
    groups = frames.contexts(table, ("epochs",))
    width = max(6.5, 4.2 * len(groups))
    fig = Figure(figsize=(width, 4.0), layout="constrained")
    for ax, (ctx, g) in zip(fig.subplots(1, len(groups), squeeze=False)[0], groups, strict=True):
        g = frames.ranked(g)
        for i, (epochs, e) in enumerate(g[g["lam"] > 0].groupby("epochs")):
            best = e.groupby("lam")["test_error"].min()  # best over alpha
            ax.plot(best.index, 100 * best.to_numpy(), marker="os^Dv"[i % 5], markersize=9 - i,
                    alpha=0.85, label=f"{epochs} epochs")
        ax.set_xscale("log", base=2)
        ax.set(xlabel=lam_label(table), ylabel=ERROR_LABEL + ", best over α",
               title=ctx.rstrip(": ") or "all cells")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(wrap("Does the best weight decay transfer across training budgets? (each "
                      "point: best test error over the α grid)", width), fontsize=10)
    return save(fig, out, "transfer")
