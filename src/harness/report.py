"""Study report: ``<study>/report/`` with report.md, PNG+PDF figures and cells.csv.

Figures use matplotlib's object API (``Figure`` rendered by Agg; no pyplot global state):
heatmaps of top-1 test error over (alpha, lambda) per optimizer x decay panel on one shared
colour scale (paper Figs. 1-2), learning curves of each panel's best cell (Fig. 3), and, when
the study varies the epoch budget, final error against lambda_norm per budget.
CLI: ``python -m harness report <study> [--results-dir results] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from harness import analysis

CMAP = "viridis"  # perceptual; low error = dark
ERROR_LABEL = "top-1 test error (%)"
CELL_IN = (0.5, 0.42)  # heatmap cell width, height (inches)
CIRCLE_PT = 0.88 * 72 * min(CELL_IN)  # top-10 circle diameter (points)
DECAY_NOTE = {"none": "no weight decay", "l2": "L2: g ← g + λθ",
              "decoupled": "decoupled: θ ← θ − η_t λ θ",
              "decoupled_lr": "lr-scaled (torch AdamW): θ ← θ − α η_t λ θ"}


def tick_label(x: float) -> str:
    """Mathtext ``2^k`` for powers of two, ``0``, else 3 significant digits."""
    text = analysis.fmt_value(x)
    return f"$2^{{{text[2:]}}}$" if text.startswith("2^") else text


def lam_label(table: pd.DataFrame) -> str:
    return "normalized weight decay λ_norm" if table["normalized"].any() else "weight decay λ"


def _save(fig: Figure, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    return paths


def _norm(table: pd.DataFrame) -> tuple[Normalize, bool]:
    """One colour scale for all panels: from the best error to min(chance, 75th pct)."""
    ok = analysis.ranked(table)
    values = 100 * ok.loc[~ok["diverged"], "test_error"].to_numpy(float)
    values = values if values.size else 100 * ok["test_error"].to_numpy(float)
    lo = float(values.min())
    hi = min(float(np.percentile(values, 75)), 100 * float(table["chance"].max()))
    hi = max(hi, lo + 1.0)
    return Normalize(lo, hi), bool((100 * ok["test_error"] > hi).any())


def _layout(table: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Panel -> (row, col): columns are decay modes, rows the other panel keys; panels are
    packed row by row instead when that grid would be less than 60% full."""
    row_keys = [k for k in analysis.panel_keys(table) if k != "decay"]
    firsts = table.drop_duplicates("panel")
    rows = list(dict.fromkeys(analysis.panel_label(r, row_keys) for _, r in firsts.iterrows()))
    cols = [d for d in analysis.ORDER["decay"] if d in set(firsts["decay"])]
    if len(firsts) >= 0.6 * len(rows) * len(cols):
        return {r["panel"]: (rows.index(analysis.panel_label(r, row_keys)),
                             cols.index(r["decay"])) for _, r in firsts.iterrows()}
    width = min(len(firsts), 4)
    return {p: divmod(i, width) for i, p in enumerate(firsts["panel"])}


def _cell_text(ax, x: int, y: int, row, norm: Normalize, top: set, best: bool, size: float):
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
    if (row.lr, row.lam) in top:  # a marker stays round whatever the cell's aspect
        ax.scatter([x], [y], s=CIRCLE_PT**2, facecolors="none", edgecolors=ink, linewidths=1.3)


def _heatmap_panel(ax, sub: pd.DataFrame, top: set, norm: Normalize, ylabel: str) -> None:
    sub = sub[np.isfinite(sub["lr"]) & np.isfinite(sub["lam"])]  # unknown lambda: not drawn
    lrs, lams = np.sort(sub["lr"].unique()), np.sort(sub["lam"].unique())
    z = np.full((len(lams), len(lrs)), np.nan)
    ix, iy = {v: i for i, v in enumerate(lrs)}, {v: i for i, v in enumerate(lams)}
    for row in sub.itertuples():
        z[iy[row.lam], ix[row.lr]] = np.nan if row.failed else 100 * row.test_error
    cmap = colormaps[CMAP].with_extremes(bad="0.85")
    ax.imshow(z, origin="lower", cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    ranked = analysis.ranked(sub)
    best = ranked["test_error"].idxmin() if not ranked.empty else None
    size = max(4.5, min(7.5, 56 / max(len(lrs), len(lams))))
    for row in sub.itertuples():
        _cell_text(ax, ix[row.lr], iy[row.lam], row, norm, top, row.Index == best, size)
    ax.set_xticks(range(len(lrs)), [tick_label(v) for v in lrs], fontsize=7)
    ax.set_yticks(range(len(lams)), [tick_label(v) for v in lams], fontsize=7)
    ax.set_xlabel("learning rate α" + _spacing(lrs), fontsize=8)
    ax.set_ylabel(ylabel + _spacing(lams), fontsize=8)
    first = sub.iloc[0]
    ax.set_title(f"{first['panel']}\n{DECAY_NOTE.get(first['decay'], first['decay'])}",
                 fontsize=9)


def plot_heatmaps(table: pd.DataFrame, out: Path) -> list[Path]:
    """Paper Figs. 1-2: test error over (alpha, lambda), one panel per optimizer x decay."""
    pos = _layout(table)
    nrows, ncols = max(p[0] for p in pos.values()) + 1, max(p[1] for p in pos.values()) + 1
    n_lr = table.groupby("panel")["lr"].nunique().max()
    n_lam = table.groupby("panel")["lam"].nunique().max()
    width = max(7.0, ncols * (1.2 + CELL_IN[0] * n_lr) + 1.2)
    height = max(4.5, nrows * (1.5 + CELL_IN[1] * n_lam) + 0.9)
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    norm, clipped = _norm(table)
    top = analysis.top_k(table, 10)
    for panel, (r, c) in pos.items():
        sub = table[table["panel"] == panel]  # circle the top 10 only if there are more
        chosen = top[top["panel"] == panel] if len(analysis.ranked(sub)) > 10 else top[:0]
        cells_top = set(zip(chosen["lr"], chosen["lam"], strict=True))
        _heatmap_panel(axes[r, c], sub, cells_top, norm, lam_label(table))
    for ax in axes.flat:
        if not ax.has_data():
            ax.set_axis_off()
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), ax=axes, shrink=0.8,
                       extend="max" if clipped else "neither")
    bar.set_label(ERROR_LABEL)
    clip = f"; colours above {norm.vmax:.1f}% are clipped" if clipped else ""
    fig.suptitle(_wrap(_heatmap_title(table) + clip, width), fontsize=10)
    return _save(fig, out, "heatmaps")


def _wrap(text: str, width_in: float) -> str:
    """Wrap each line of a 10 pt title to the figure width."""
    chars = int(width_in * 12)
    return "\n".join(textwrap.fill(line, chars) for line in text.splitlines())


def _spacing(values: np.ndarray) -> str:
    """' (log scale)' when the grid is evenly spaced in log, else ' (grid values)'."""
    pos = np.log2(values[values > 0])
    even = len(pos) > 2 and np.allclose(np.diff(pos), np.diff(pos)[0])
    return " (log scale)" if even else " (grid values)"


def _heatmap_title(table: pd.DataFrame) -> str:
    def one(col: str) -> str:
        return ", ".join(str(v) for v in pd.unique(table[col]))

    return (f"{one('study')}: {ERROR_LABEL} after {one('epochs')} epochs ({one('dataset')}, "
            f"{one('model')}, {one('schedule')} schedule)\nnumbers = error in %; circled = "
            f"top-10 of the panel; bold = best; hatched = diverged (chance); grey = failed")


def plot_learning_curves(runs: pd.DataFrame, table: pd.DataFrame, out: Path) -> list[Path]:
    """Paper Fig. 3: train loss and test error per epoch of each panel's best cell."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    loss_ax, err_ax = fig.subplots(1, 2)
    for i, (_, best) in enumerate(analysis.best_cells(table).iterrows()):
        rows = runs[runs["run_id"].isin(best["run_ids"].split(";")) & (runs["epoch"] >= 1)]
        curve = rows.groupby("epoch")[["train_loss", "test_error"]].mean()
        label = f"{best['panel']} (α={tick_label(best['lr'])}, λ={tick_label(best['lam'])})"
        style = {"color": colormaps["tab10"](i % 10), "linestyle": "-" if i < 10 else "--",
                 "marker": "o", "markersize": 3}
        loss_ax.plot(curve.index, curve["train_loss"], label=label, **style)
        tested = curve["test_error"].dropna()  # epochs without evaluation (train.eval_every)
        err_ax.plot(tested.index, 100 * tested, label=label, **style)
    loss_ax.set_yscale("log")
    loss_ax.set(xlabel="epoch", ylabel="train loss (cross-entropy, log scale)",
                title="training loss, best cell of each panel")
    err_ax.set(xlabel="epoch", ylabel=ERROR_LABEL, title="test error, best cell of each panel")
    for ax in (loss_ax, err_ax):
        ax.grid(alpha=0.3)
    err_ax.legend(fontsize=7, loc="upper right")
    return _save(fig, out, "learning_curves")


def plot_transfer(table: pd.DataFrame, out: Path) -> list[Path]:
    """Final error vs lambda_norm, one line per epoch budget, one axis per panel sans epochs."""
    groups = analysis.contexts(table, ("epochs",))
    width = max(6.5, 4.2 * len(groups))
    fig = Figure(figsize=(width, 4.0), layout="constrained")
    for ax, (ctx, g) in zip(fig.subplots(1, len(groups), squeeze=False)[0], groups, strict=True):
        g = analysis.ranked(g)
        for i, (epochs, e) in enumerate(g[g["lam"] > 0].groupby("epochs")):
            best = e.groupby("lam")["test_error"].min()  # best over alpha
            ax.plot(best.index, 100 * best.to_numpy(), marker="os^Dv"[i % 5], markersize=9 - i,
                    alpha=0.85, label=f"{epochs} epochs")
        ax.set_xscale("log", base=2)
        ax.set(xlabel=lam_label(table), ylabel=ERROR_LABEL + ", best over α",
               title=ctx.rstrip(": ") or "all cells")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(_wrap("Does the best weight decay transfer across training budgets? (each "
                       "point: best test error over the α grid)", width), fontsize=10)
    return _save(fig, out, "transfer")


def _table(headers: list[str], rows: list[list]) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows])


def _values(series: pd.Series) -> str:
    vals = sorted(pd.unique(series.dropna()))
    text = [analysis.fmt_value(v) if isinstance(v, float) else str(v) for v in vals]
    return ", ".join(text) if len(text) <= 12 else f"{text[0]} … {text[-1]} ({len(text)} values)"


def _setup(runs: pd.DataFrame, table: pd.DataFrame) -> str:
    per_run = runs.drop_duplicates("run_id", keep="last")["status"].value_counts()
    statuses = ", ".join(f"{n} {s}" for s, n in per_run.items())
    rows = [[k, _values(runs[k])] for k in ("dataset", "model", "epochs", "batch_size",
                                             "n_train", "schedule", "optimizer", "decay")]
    rows += [["learning rate α grid", _values(table["lr"])],
             [lam_label(table) + " grid", _values(table["lam"])],
             ["seeds", _values(runs["seed"])],
             ["cells (grid points)", f"{len(table)}; runs {runs['run_id'].nunique()}: {statuses}"]]
    prov = [[k, _values(runs[k]) if k in runs else "unknown"]
            for k in ("git_sha", "harness_version", "torch_version", "device")]
    return ("## What was run\n\n" + _table(["setting", "value"], rows)
            + "\n\n## Provenance\n\n" + _table(["field", "value"], prov))


def _best_and_separability(table: pd.DataFrame) -> str:
    best = [[b["panel"], analysis.fmt_value(b["lr"]), analysis.fmt_value(b["lam"]),
             f"{100 * b['test_error']:.2f}", "" if pd.isna(b["test_error_std"])
             else f"{100 * b['test_error_std']:.2f}", b["seeds"], b["status"]]
            for _, b in analysis.best_cells(table).iterrows()]
    seps = []
    for panel in analysis.panels(table):
        s = analysis.separability(table[table["panel"] == panel])
        reading = ("n/a (too few usable α columns)" if np.isnan(s.slope) else
                   f"undetermined (λ* inside the grid in {s.interior} of {s.n} α columns)"
                   if not s.determined else
                   "uncertain (stderr > 0.3 or n < 3)" if not s.stderr <= 0.3 else "separable"
                   if abs(s.slope) < 0.35 else "coupled" if s.slope < -0.65 else "in between")
        seps.append([panel, "" if np.isnan(s.slope) else analysis.signed(s.slope),
                     "" if np.isnan(s.stderr) else f"{s.stderr:.2f}", s.n, reading])
    definition = ("For each α column, λ*(α) = argmin over λ of the final test error (refined "
                  "by a parabola in log₂ λ through the 3 cells around an interior minimum; "
                  "columns with best error ≥ 0.9 × chance are ignored; edge minima are dropped "
                  "when ≥ 3 interior ones exist, and with fewer the slope is undetermined). "
                  "The slope is the least-squares fit of log₂ λ* "
                  "on log₂ α, with its OLS standard error. Slope ≈ 0: separable (the best λ "
                  "does not move with α; the paper's SGDW/AdamW). Slope ≈ −1: coupled (α·λ "
                  "constant; SGD+L2, or PyTorch's lr-scaled AdamW in the paper's units).")
    return ("## Best cell per panel\n\n" + _table(
        ["panel", "α", lam_label(table), ERROR_LABEL, "std over seeds (pts)", "seeds",
         "status"], best) + "\n\n## Separability of the (α, λ) basin\n\n" + definition
        + "\n\n" + _table(["panel", "slope", "stderr", "α columns used", "reading"], seps))


def markdown(name: str, runs: pd.DataFrame, table: pd.DataFrame, problems: list[str],
             figures: dict[str, str]) -> str:
    """The self-contained report.md text."""
    captions = {"heatmaps": "Test error heatmaps (paper Figs. 1-2)",
                "learning_curves": "Learning curves of each panel's best cell (paper Fig. 3)",
                "transfer": "Best normalized weight decay per training budget"}
    parts = [f"# Report: {name}\n\nDecoupled weight decay study (Loshchilov & Hutter, "
             "ICLR 2019). Errors are top-1 test error after the last epoch, in %; a "
             "diverged run counts at chance level.", _setup(runs, table)]
    parts += [f"## {captions[k]}\n\n![{k}]({f}) ([PDF]({Path(f).with_suffix('.pdf')}))"
              for k, f in figures.items()]
    parts.append(_best_and_separability(table))
    claim_rows = [[c.name, c.paper_statement, c.measured, f"**{c.verdict}**"]
                  for c in analysis.claims(table)]
    parts.append("## The paper's claims\n\n" + _table(
        ["claim", "paper", "measured here", "verdict"], claim_rows))
    failed = table[table["failed"]]
    issues = ([f"skipped file: {p}" for p in problems] + [
        f"grid edge: {w}" for w in analysis.edge_warnings(table)] + [
        f"failed cell: {r['panel']} α={analysis.fmt_value(r['lr'])} "
        f"λ={analysis.fmt_value(r['lam'])}: {r['error_message'] or 'no message'}"
        for _, r in failed.iterrows()])
    n_div = int(table["diverged"].sum())
    if n_div:
        issues.append(f"{n_div} cell(s) with a diverged seed, counted at chance level")
    parts.append("## Problems\n\n" + ("\n".join(f"- {i}" for i in issues) or "none"))
    return "\n\n".join(parts) + "\n"


def write_report(study_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Analyse ``study_dir`` and write report.md, figures and cells.csv; return report.md."""
    study_dir = Path(study_dir)
    runs, problems = analysis.load_runs(study_dir)
    if runs.empty:
        raise ValueError(f"no readable parquet files in {study_dir / 'runs'}")
    out = Path(out_dir) if out_dir is not None else study_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    table = analysis.cells(runs)
    table.to_csv(out / "cells.csv", index=False)
    figures = {"heatmaps": plot_heatmaps(table, out)[0].name}
    if analysis.ranked(table).shape[0]:
        figures["learning_curves"] = plot_learning_curves(runs, table, out)[0].name
    if table["epochs"].nunique() > 1:
        figures["transfer"] = plot_transfer(table, out)[0].name
    path = out / "report.md"
    path.write_text(markdown(study_dir.name, runs, table, problems, figures), encoding="utf-8")
    return path


def _studies(results_dir: Path) -> list[str]:
    return sorted(p.name for p in results_dir.glob("*") if (p / "runs").is_dir())


def main(argv: list[str] | None = None) -> int:
    """``report <study>``: 0 on success, 2 for an unknown study, 1 if nothing is readable."""
    parser = argparse.ArgumentParser(prog="python -m harness report", description=__doc__)
    parser.add_argument("study", help="a study name under --results-dir, or a study path")
    parser.add_argument("--results-dir", default="results", type=Path)
    parser.add_argument("--out", default=None, help="output folder (default <study>/report)")
    args = parser.parse_args(argv)
    candidates = [Path(args.study), args.results_dir / args.study]
    study = next((p for p in candidates if (p / "runs").is_dir()), None)
    if study is None:
        found = ", ".join(_studies(args.results_dir)) or "none"
        print(f"unknown study {args.study!r}; studies under {args.results_dir}: {found}",
              file=sys.stderr)
        return 2
    try:
        path = write_report(study, args.out)
    except ValueError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
