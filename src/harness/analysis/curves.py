"""Report line figures (PNG + PDF): error against epoch (paper Fig. 3's learning curves),
against lambda at one alpha (the decay curves of claim 2), and the best error against lambda
per training budget (the transfer of claim 4).

``seaborn.lineplot`` draws the seed mean with a +-1 sd band (or bars); every seed a dot where
the seeds themselves are the evidence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from harness.analysis import frames, names
from harness.analysis.figures import (
    ERROR_LABEL,
    lam_label,
    legend_below,
    legend_entries,
    save,
    tick_label,
    wrap,
)


def plot_learning_curves(runs: pd.DataFrame, table: pd.DataFrame, out: Path) -> list[Path]:
    """Paper Fig. 3: train loss and test error per epoch of each panel's chosen cell, the
    mean over its seeds with a +-1 sd band (seaborn.lineplot); one legend below both."""
    parts = []
    for _, best in frames.best_cells(table).iterrows():
        rows = runs[runs["run_id"].isin(best["run_ids"].split(";")) & (runs["epoch"] >= 1)]
        label = (f"{names.panel(best['panel'])} (α={tick_label(best['lr'])}, "
                 f"λ={tick_label(best['lam'])}, {best['seeds']} seed{'s' * (best['seeds'] > 1)})")
        parts.append(rows.assign(cell=label, test_pct=100 * rows["test_error"].astype(float)))
    data = pd.concat(parts, ignore_index=True)
    fig = Figure(figsize=(11.5, 4.4 + 0.2 * data["cell"].nunique()), layout="constrained")
    loss_ax, err_ax = fig.subplots(1, 2, sharex=True)
    palette = sns.color_palette("tab10", data["cell"].nunique())
    common = {"x": "epoch", "hue": "cell", "errorbar": "sd", "marker": "o", "markersize": 4,
              "palette": palette}
    sns.lineplot(data=data, y="train_loss", ax=loss_ax, legend=False, **common)
    finite = data.dropna(subset=["test_pct"])
    if len(finite):  # none when every chosen cell diverged
        sns.lineplot(data=finite, y="test_pct", ax=err_ax, **common)
    loss_ax.set_yscale("log")
    loss_ax.set(xlabel="epoch", ylabel="train loss (cross-entropy, log scale)",
                title="Training loss")
    err_ax.set(xlabel="epoch", ylabel=ERROR_LABEL, title="Test error")
    for ax in (loss_ax, err_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = err_ax.get_legend_handles_labels()
    if err_ax.get_legend():  # none when no chosen cell has a finite test error (all diverged)
        err_ax.get_legend().remove()
    legend_below(fig, handles, labels, ncols=2)
    fig.suptitle(f"Learning curves of each panel's chosen cell ({names.values(table['study'])})",
                 fontsize=10)
    return save(fig, out, "learning_curves", (
        "Training loss (left, cross-entropy, log scale) and " + ERROR_LABEL + " (right) per "
        "epoch of each panel's chosen cell (paper Fig. 3), the mean over its seeds with a band "
        "of ±1 sd over seeds; the legend names each cell's method, α, λ and seeds."))


MAX_CURVE_ALPHAS = 4  # decay curves for optimizers with at most this many alphas (claims_cpu: 4)


def plot_decay_curves(per_run: pd.DataFrame, table: pd.DataFrame, out: Path) -> list[Path] | None:
    """Claim 2's picture: final test error against λ, one axis per (optimizer, α), every decay
    mode of that optimizer on it (its own λ unit: L2 in the gradient, decoupled per step), the
    seed mean ± 1 sd (seaborn.lineplot) over a dot per seed, and λ = 0 as a band (mean ± 1
    sd over its seeds). A run that did not train (`frames.at_chance`) is a cross on the top
    edge, not part of a mean: one seed at chance would drag a cell's mean to 50%. None when
    no optimizer has decayed cells at 1..MAX_CURVE_ALPHAS α (a heatmap then shows more) or
    the study varies schedule, epochs, model or dataset."""
    runs = per_run[np.isfinite(per_run["test_error"].astype(float))]
    runs = runs.assign(test_pct=100 * runs["test_error"].astype(float),
                       method=[names.method(o, d) for o, d in zip(runs["optimizer"],
                                                                  runs["decay"], strict=True)],
                       flat=frames.at_chance(runs))
    extra = [k for k in frames.panel_keys(runs) if k not in ("optimizer", "decay")]
    if extra:  # schedules or budgets side by side: the heatmaps and transfer figure show them
        return None
    axes_of = [(opt, lr) for opt, g in runs.groupby("optimizer", sort=False)
               if (g["lam"] > 0).any() and g["lr"].nunique() <= MAX_CURVE_ALPHAS
               for lr in sorted(g.loc[g["lam"] > 0, "lr"].unique())]
    if not axes_of:
        return None
    rows = list(dict.fromkeys(opt for opt, _ in axes_of))  # one row per optimizer
    cols = max(sum(opt == row for opt, _ in axes_of) for row in rows)
    fig = Figure(figsize=(max(6.0, 5.2 * cols), 0.8 + 4.0 * len(rows)), layout="constrained")
    methods = list(dict.fromkeys(m for m, d in zip(runs["method"], runs["decay"], strict=True)
                                 if d != "none"))
    palette = dict(zip(methods, sns.color_palette("tab10", len(methods)), strict=True))
    zeros, n_flat = [], 0
    grid = fig.subplots(len(rows), cols, squeeze=False)
    axes = [grid[rows.index(opt), sum(o == opt for o, _ in axes_of[:i])]
            for i, (opt, _) in enumerate(axes_of)]
    for ax in set(grid.flat) - set(axes):
        ax.set_axis_off()
    for ax, (opt, lr) in zip(axes, axes_of, strict=True):
        here = runs[(runs["optimizer"] == opt) & (runs["lr"] == lr)]
        left = here.loc[here["lam"] > 0, "lam"].min()  # where a flat lambda = 0 run is drawn
        flat, here = here[here["flat"]], here[~here["flat"]]
        zero = here[here["lam"] == 0]["test_pct"]
        if len(zero):
            mean, sd = zero.mean(), zero.std(ddof=1) if len(zero) > 1 else 0.0
            ax.axhspan(mean - sd, mean + sd, color="0.5", alpha=0.2, lw=0)
            ax.axhline(mean, color="0.35", ls="--", lw=1.2, label="λ = 0 (mean ± 1 sd)")
            zeros.append(f"{names.optimizer(opt)} at α = {frames.fmt_value(lr)}: λ = 0 gives "
                         f"{mean:.2f}% ± {sd:.2f} ({len(zero)} seeds)")
        decayed = here[here["lam"] > 0]
        for method, g in decayed.groupby("method", sort=False):
            ax.scatter(g["lam"], g["test_pct"], s=14, alpha=0.45, color=palette[method])
        if len(decayed):
            sns.lineplot(data=decayed, x="lam", y="test_pct", hue="method", palette=palette,
                         errorbar="sd", err_style="bars", marker="o", markersize=6, ax=ax,
                         err_kws={"capsize": 3})
            _clip_high(ax, decayed, here["test_pct"].min())
        elif not len(here):  # nothing here trained: the whole error range, crosses on top
            ax.set_ylim(0.0, 100.0)
        ax.set_xscale("log", base=2)
        if len(flat):  # on the top edge, outside the axis' data
            n_flat += len(flat)
            top = ax.get_ylim()[1]
            ax.set_ylim(top=top)
            ax.scatter(flat["lam"].where(flat["lam"] > 0, left),
                       np.full(len(flat), top), marker="x", s=40, clip_on=False, zorder=5,
                       color=[palette.get(m, "0.35") for m in flat["method"]],
                       label="did not train (at chance)")
        ax.set(xlabel=lam_label(table) + " (each method in its own unit)", ylabel=ERROR_LABEL,
               title=f"{names.optimizer(opt)} at α = {tick_label(lr)}")
        ax.grid(alpha=0.3)
        if ax.get_legend():
            ax.get_legend().remove()
    legend_below(fig, *legend_entries(axes), ncols=4)
    fig.suptitle(f"Test error against weight decay ({names.values(table['study'])})",
                 fontsize=10)
    return save(fig, out, "decay_curves", (
        f"Final {ERROR_LABEL} against weight decay λ at each α: line = the mean over seeds "
        "with ±1 sd bars, dots = the seeds, dashed line and grey band = no decay (λ = 0, mean "
        "± 1 sd over its seeds); each method's λ in its own unit (L2: added to the gradient; "
        "decoupled: per step). The y axis stops 8 points above the best run; a mean above it "
        "is written at the top edge with an arrow. "
        + (f"A cross on the top edge: one of {n_flat} runs that did not train (final error at "
           f"or above {100 * frames.USABLE:.0f}% of chance), left out of the means. "
           if n_flat else "") + "; ".join(zeros) + "."))


def _clip_high(ax, decayed: pd.DataFrame, low: float, span: float = 8.0) -> None:
    """Keep the y axis to `span` points above the best run, so the differences near the
    optimum stay readable; the cell means above it are written at the top edge instead (one
    label per λ)."""
    means = decayed.groupby(["decay", "lam"])["test_pct"].mean()
    top = low + span
    if means.max() <= top:
        return
    ax.set_ylim(top=top, bottom=max(0.0, low - 1.0))
    high = means[means > top]
    for lam, group in high.groupby(level="lam"):
        text = "\n".join(f"{v:.1f}%" for v in group.sort_values()) + " ↑"
        ax.annotate(text, (lam, top), xytext=(0, -4), textcoords="offset points",
                    ha="center", va="top", fontsize=8)


def plot_transfer(table: pd.DataFrame, out: Path) -> list[Path]:
    """Final test error against lambda_norm, one line per epoch budget, one axis per decayed
    panel sans epochs. At each lambda the point is the cell whose alpha the selection metric
    chooses (the test set never chooses); ringed: the budget's cell chosen over every lambda;
    dashed: the best lambda = 0 cell of the same optimizer at that budget, chosen the same way."""
    metric = frames.selection_metric(table)
    on = "validation error" if metric == "val_error" else "test error"
    ranked = frames.ranked(table)
    groups = [(ctx, g) for ctx, g in frames.contexts(ranked, ("epochs",)) if (g["lam"] > 0).any()]
    groups = groups or [("", ranked)]  # no decayed cell: one empty axis, as before
    width = max(6.5, 4.2 * len(groups))
    fig = Figure(figsize=(width, 4.4), layout="constrained")
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    colours = sns.color_palette(n_colors=max(1, table["epochs"].nunique()))
    budgets = sorted(table["epochs"].unique())
    for ax, (ctx, g) in zip(axes, groups, strict=True):
        for epochs, e in g[g["lam"] > 0].groupby("epochs"):
            i = budgets.index(epochs)
            chosen = e.loc[e.groupby("lam")[metric].idxmin()]  # one alpha per lambda
            ax.plot(chosen["lam"], 100 * chosen["test_error"], marker="os^Dv"[i % 5],
                    markersize=9 - i, alpha=0.85, color=colours[i], label=names.epochs(epochs))
            best = chosen.loc[chosen[metric].idxmin()]
            ax.plot(best["lam"], 100 * best["test_error"], marker="o", markersize=18,
                    color=colours[i], markerfacecolor="none", markeredgewidth=1.5)
            zero = ranked[(ranked["optimizer"] == e["optimizer"].iloc[0])
                          & (ranked["lam"] == 0) & (ranked["epochs"] == epochs)]
            if len(zero):
                ax.axhline(100 * zero.loc[zero[metric].idxmin(), "test_error"],
                           color=colours[i], linestyle="--", linewidth=1, alpha=0.8)
        ax.plot([], [], "o", markersize=12, color="0.3", markerfacecolor="none",
                label=f"chosen on {on}")
        ax.plot([], [], "--", color="0.3", linewidth=1, label="λ = 0 (the budget's colour)")
        ax.set_xscale("log", base=2)
        ax.set(xlabel=lam_label(table), ylabel=ERROR_LABEL)
        ax.set_title(wrap(names.panel(ctx.rstrip(": ")) if ctx else "all cells", 3.8, 10),
                     fontsize=10)
        ax.grid(alpha=0.3)
    legend_below(fig, *legend_entries(axes), ncols=5)
    fig.suptitle("Best weight decay per training budget", fontsize=10)
    return save(fig, out, "transfer", (
        "Does the best weight decay transfer across training budgets? One line per training "
        f"budget, one axis per method with weight decay. At each λ the point is the {ERROR_LABEL} "
        f"of the cell whose α is chosen on {on} (mean over its seeds); ringed: the budget's "
        f"best cell by {on}; dashed: the same optimizer without weight decay (λ = 0) at that "
        "budget, in the line's colour, chosen the same way."))
