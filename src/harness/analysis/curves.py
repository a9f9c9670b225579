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

from harness.analysis import frames
from harness.analysis.figures import ERROR_LABEL, lam_label, save, tick_label, wrap


def plot_learning_curves(runs: pd.DataFrame, table: pd.DataFrame, out: Path) -> list[Path]:
    """Paper Fig. 3: train loss and test error per epoch of each panel's chosen cell, the
    mean over its seeds with a +-1 sd band (seaborn.lineplot)."""
    parts = []
    for _, best in frames.best_cells(table).iterrows():
        rows = runs[runs["run_id"].isin(best["run_ids"].split(";")) & (runs["epoch"] >= 1)]
        label = (f"{best['panel']} (α={tick_label(best['lr'])}, λ={tick_label(best['lam'])}, "
                 f"{best['seeds']} seed{'s' * (best['seeds'] > 1)})")
        parts.append(rows.assign(cell=label, test_pct=100 * rows["test_error"].astype(float)))
    data = pd.concat(parts, ignore_index=True)
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
