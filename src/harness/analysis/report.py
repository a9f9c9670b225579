"""Study report: ``<study>/report/`` with report.md, PNG+PDF figures and cells.csv.

    parquet --frames--> finals (one row per run), cells (seeds averaged)
            --stats/claims/units--> separability, damage frontier, verdicts, coordinates
            --heatmaps, curves--> heatmaps, coordinates, learning and decay curves
            (, transfer) --> report.md

Every file is written atomically (``harness.fsutil``). Files or runs that cannot be used are
skipped with one line each; the report says how many and why, and builds from the rest.
CLI: ``python -m harness report <study> [--results-dir results] [--out DIR]``.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis import (
    claims,
    curves,
    figures,
    frames,
    heatmaps,
    names,
    registered,
    stats,
    units,
)
from harness.analysis.frames import fmt_value
from harness.fsutil import atomic_write, atomic_write_text

ERROR_LABEL = figures.ERROR_LABEL
SENSITIVITY = (0.02, 0.04, 0.08)  # damage-frontier margins the report also gives a slope at


def _md(rows: list[dict]) -> str:
    """A markdown table through pandas (``DataFrame.to_markdown``, tabulate's pipe format)."""
    df = pd.DataFrame(rows).astype(str).replace({r"\|": r"\\|", "\n": " "}, regex=True)
    return df.to_markdown(index=False, disable_numparse=True)


def _values(series: pd.Series) -> str:
    vals = sorted(pd.unique(series.dropna()))
    text = [str(int(v)) if isinstance(v, float) and v.is_integer() and v > 16 else
            fmt_value(v) if isinstance(v, float) else str(v) for v in vals]
    return ", ".join(text) if len(text) <= 12 else f"{text[0]} … {text[-1]} ({len(text)} values)"


def _setup(runs: pd.DataFrame, table: pd.DataFrame) -> str:
    per_run = runs.drop_duplicates("run_id", keep="last")["status"].value_counts()
    statuses = ", ".join(f"{n} {s}" for s, n in per_run.items())
    rows = [{"setting": k, "value": _values(runs[k])} for k in (
        "dataset", "model", "epochs", "batch_size", "n_train", "schedule", "optimizer", "decay")]
    rows += [{"setting": "learning rate α grid", "value": _values(table["lr"])},
             {"setting": figures.lam_label(table) + " grid", "value": _values(table["lam"])},
             {"setting": "seeds", "value": _values(runs["seed"])},
             {"setting": "cells (grid points)",
              "value": f"{len(table)}; runs {runs['run_id'].nunique()}: {statuses}"},
             {"setting": "methods (panels)", "value": ", ".join(
                 names.panel(p) for p in frames.panels(table))}]
    prov = [{"field": k, "value": _values(runs[k]) if k in runs else "unknown"}
            for k in ("git_sha", "harness_version", "torch_version", "device", "cpu_model",
                      "cpu_threads")]
    return f"## What was run\n\n{_md(rows)}\n\n## Provenance\n\n{_md(prov)}"


def _selection(table: pd.DataFrame) -> str:
    if frames.selection_metric(table) == "val_error":
        return ("Cells are **chosen on validation error** (a split held out of the training "
                "set) and **scored on the test set**.")
    return ("No `val_error` is recorded, so cells were **chosen and scored on the same test "
            "set**: each chosen error is biased low by about one noise σ (the minimum of noisy "
            "values), and differences smaller than that are not evidence.")


def _best(table: pd.DataFrame) -> str:
    best = frames.best_cells(table)
    tau = units.tau_epochs(best)
    rows = [{"panel": names.panel(b["panel"]), "α": fmt_value(b["lr"]),
             figures.lam_label(table): fmt_value(b["lam"]),
             "λ in paper units": _paper(b), "τ (epochs)": "" if math.isnan(t) else f"{t:.3g}",
             ERROR_LABEL: f"{100 * b['test_error']:.2f}",
             "sd over seeds (pts)": "" if pd.isna(b["test_error_std"])
             else f"{100 * b['test_error_std']:.2f}", "seeds": b["seeds"],
             "status": b["status"]} for (_, b), t in zip(best.iterrows(), tau, strict=True)]
    return ("## Chosen cell per panel\n\n" + _selection(table) + " τ = b / (B·α·λ_torch) = "
            "b / (B·λ_paper) is the decay's EMA timescale in epochs (Wang & Aitchison, ICML "
            "2025; λ the value actually used), the quantity to carry to another dataset size."
            "\n\n" + _md(rows))


def _paper(b: pd.Series) -> str:
    if b["decay"] not in units.DECOUPLED or not b["lam"] > 0:
        return ""
    return fmt_value(units.convert(b["lam"], b["lr"], b["decay"], "paper"))


def _separability(table: pd.DataFrame, per_run: pd.DataFrame) -> str:
    rows, margins = [], []
    for panel in frames.panels(table):
        sub, runs = table[table["panel"] == panel], per_run[per_run["panel"] == panel]
        if not (sub["lam"] > 0).any():
            continue
        fit = stats.panel_fits(sub, runs)
        slopes = {f"+{100 * m:g} pts": stats.frontier_slope(sub, m) for m in SENSITIVITY}
        if any(f.determined for f in slopes.values()):
            margins.append({"panel": names.panel(panel),
                            **{k: f.text() for k, f in slopes.items()}})
        basin, overall = fit.basin, stats.noise(runs)
        spread = "" if overall.cells <= fit.noise.cells else \
            f"; over all {overall.cells} cells with 2+ seeds σ = {100 * overall.sigma:.2f} pts"
        rows.append({"panel": names.panel(panel), "basin ridge slope [95%]": basin.text(),
                     "reading": basin.reading(), "cells in fit": basin.n,
                     "fit residual sd (pts)": "" if math.isnan(basin.resid_sd)
                     else f"{100 * basin.resid_sd:.2f}",
                     "damage frontier slope [95%] (margin pts)": f"{fit.frontier.text()} "
                     f"({100 * fit.margin:.1f})", "noise": fit.noise.text() + spread,
                     "in the other units": _other(sub, basin)})
    sensitivity = ("\n\nHow the damage-frontier slope depends on the margin (the verdict uses "
                   "the margin above; a reading that holds at every margin does not hang on "
                   "that choice):\n\n" + _md(margins)) if margins else ""
    return ("## Separability of the (α, λ) basin\n\n"
            "Slope = dlog₂λ*/dlog₂α: 0 = separable (the best λ does not move with α: the "
            "paper's SGDW/AdamW), −1 = coupled (α·λ constant: SGD+L2, PyTorch's AdamW in the "
            "paper's units). **Basin**: a quadratic surface in (log₂α, log₂λ) fitted to the "
            f"lower half of the usable cells (at least {stats.MIN_CELLS}; diverged and near-"
            "chance cells excluded), every seed a point; its ridge gives the slope; the 95% "
            f"interval is a bootstrap over cells ({stats.BOOTSTRAP} resamples). **Damage "
            "frontier**: in each α column, the λ (interpolated) where the error first exceeds "
            f"the column's best by the margin (max of {100 * stats.MARGIN:.0f} points and "
            f"{stats.NOISE_MARGIN:g} σ, σ pooled over the cells within {100 * stats.MARGIN:.0f} "
            "points of their column's best: seed noise grows where decay damages training); "
            "least squares over columns, 95% t interval. A slope "
            f"whose interval is wider than {stats.WIDTH:g} (the distance between coupled and "
            "separable), whose surface has no minimum in λ, or whose optimum lies off the grid "
            "is **undetermined** and no number is given for it.\n\n" + _md(rows) + sensitivity
            if rows else "## Separability of the (α, λ) basin\n\nno panel has λ > 0")


def _other(sub: pd.DataFrame, basin: stats.Slope) -> str:
    decay = sub["decay"].iloc[0]
    if decay not in units.DECOUPLED or not basin.determined:
        return ""
    other = "torch" if units.native(decay) == "paper" else "paper"
    shift = 1 if other == "paper" else -1
    return (f"{frames.signed(basin.estimate + shift)} [{frames.signed(basin.low + shift)}, "
            f"{frames.signed(basin.high + shift)}] in {other} units")


def _coordinates(table: pd.DataFrame) -> str:
    text = ("## The paper's units and PyTorch's\n\nThe paper's decoupled decay is "
            "θ ← θ − η_t·λ·θ; PyTorch's AdamW (`decoupled_lr`) is θ ← θ − α·η_t·λ·θ. So "
            "decoupled(λ) = decoupled_lr(λ/α) exactly. **One surface in two coordinate "
            "systems**: a panel and its re-plot in the other units (figure below; the ridge "
            "slope shifts by exactly 1). **Two measurements**: SGD+L2 vs SGDW, Adam+L2 vs "
            "AdamW (different updates), and a `decoupled` panel vs a `decoupled_lr` panel of "
            "the same optimizer, which are the same update family measured twice: where their "
            "converted grids meet, their errors must agree (below).")
    lines = []
    for opt, g in table.groupby("optimizer", sort=False):
        a, b = g[g["decay"] == "decoupled"], g[g["decay"] == "decoupled_lr"]
        if a.empty or b.empty:
            continue
        both = units.overlap(a, b)
        lines.append(f"- {names.optimizer(opt)}: {len(both)} cell(s) of "
                     f"{names.method(opt, 'decoupled_lr')} are cells of "
                     f"{names.method(opt, 'decoupled')} in paper units" + (
                         f"; largest |difference| {100 * both['difference'].abs().max():.2f} "
                         "points" if len(both) else ""))
    return text + ("\n\n" + "\n".join(lines) if lines else "")


def _named(line: str) -> str:
    """``"sgd / l2: ..."`` -> ``"SGD+L2: ..."``."""
    panel, _, rest = line.partition(": ")
    return f"{names.panel(panel)}: {rest}"


def _problems(table: pd.DataFrame, problems: list[str]) -> str:
    reasons = Counter(p.split(": ", 1)[1].rsplit(",", 1)[0] for p in problems)
    head = (f"{len(problems)} file(s) skipped: " + "; ".join(
        f"{n} × {r}" for r, n in reasons.most_common())) if problems else ""
    issues = [f"skipped file: {p}" for p in problems] + [
        f"grid edge: {_named(w)}" for w in frames.edge_warnings(table)] + [
        f"failed cell: {names.panel(r['panel'])} α={fmt_value(r['lr'])} λ={fmt_value(r['lam'])}: "
        f"{r['error_message'] or 'no message'}" for _, r in table[table["failed"]].iterrows()]
    n_div = int(table["diverged"].sum())
    if n_div:
        issues.append(f"{n_div} cell(s) with a diverged seed, counted at chance level")
    n_flat = int(((table["n_at_chance"] > 0) & ~table["diverged"]).sum())
    if n_flat:
        issues.append(f"{n_flat} cell(s) with a seed that did not train (final error at or "
                      f"above {100 * frames.USABLE:.0f}% of chance, status completed): "
                      "hatched, outside the colour scale and the seed noise")
    body = "\n".join(f"- {i}" for i in issues) or "none"
    return "## Problems\n\n" + (head + "\n\n" if head else "") + body


def _figure(key: str, file: str, out: Path | None) -> str:
    """The image, its PDF and its caption (``<figure>.caption.txt``, written with it)."""
    caption = figures.caption_of(out / file) if out is not None else ""
    quoted = "\n".join(f"> {line}" if line else ">" for line in
                       f"**Figure.** {caption}".splitlines())
    return (f"![{key}]({file}) ([PDF]({Path(file).with_suffix('.pdf')}))"
            + (f"\n\n{quoted}" if caption else ""))


def markdown(name: str, runs: pd.DataFrame, table: pd.DataFrame, per_run: pd.DataFrame,
             problems: list[str], figs: dict[str, str], out: Path | None = None) -> str:
    """The self-contained report.md text (``out``: where the figures and captions are)."""
    captions = {"heatmaps": "Test error heatmaps (paper Figs. 1-2)",
                "learning_curves": "Learning curves of each panel's chosen cell (paper Fig. 3)",
                "decay_curves": "Test error against weight decay at each α",
                "coordinates": "Decoupled panels in the paper's and PyTorch's units",
                "transfer": "Best normalized weight decay per training budget"}
    parts = [f"# Report: {name}\n\nDecoupled weight decay study (Loshchilov & Hutter, ICLR "
             "2019). Errors are top-1 test error after the last epoch, in %; a diverged run "
             "counts at chance level; σ is the seed-to-seed standard deviation of a cell's "
             "final error, pooled over cells.", _setup(runs, table)]
    parts += [f"## {captions[k]}\n\n{_figure(k, f, out)}" for k, f in figs.items()
              if k != "coordinates"]
    parts += [_best(table), _separability(table, per_run), _coordinates(table)]
    if "coordinates" in figs:
        parts.append(_figure("coordinates", figs["coordinates"], out))
    parts += [_claims(name, table, per_run), _problems(table, problems)]
    return "\n\n".join(parts) + "\n"


def _claims(name: str, table: pd.DataFrame, per_run: pd.DataFrame) -> str:
    """The paper's claims: by the rules REPRODUCTION.md registered for this study before its
    runs (harness.analysis.registered), else by harness.analysis.claims."""
    found = registered.verdicts(name, per_run)
    if found is not None:
        left_out = registered.untrained_text(per_run)
        if left_out:  # each registered verdict, then the same claim under A1
            amended = registered.verdicts(name, per_run, amended=True)
            found = [v for pair in zip(found, amended, strict=True) for v in pair]
        wider = {v.claim.split(",")[0]: v for v in registered.verdicts_a2(name, per_run)}
        ordered = []  # each claim's A1+A2 row after its other rows
        for i, v in enumerate(found):
            ordered.append(v)
            claim = v.claim.split(",")[0]
            if claim in wider and (i + 1 == len(found)
                                   or found[i + 1].claim.split(",")[0] != claim):
                ordered.append(wider[claim])
        found = ordered
        rows = [{"claim": v.claim, "measured here": v.measured, "verdict": f"**{v.verdict}**"}
                for v in found]
        amendment = (f"\n\nRows \"amended A1\" apply REPRODUCTION.md's amendment A1, written "
                     "after the rules above: a run whose final validation error is at or above "
                     f"{100 * frames.USABLE:.0f}% of chance did not train and is left out. It "
                     f"leaves out: {left_out}.") if left_out else ""
        if wider:
            amendment += ("\n\nRows \"amended A1+A2\" also apply amendment A2, written after "
                          "the grid of claims 2 and 3 was seen: an Adam method chosen on the "
                          "edge of the alpha grid gains alpha columns beyond it (seed 0, the "
                          "registered lambdas, at most three steps of 4x), and its cells are "
                          "chosen on the wider grid.")
        return ("## The paper's claims, by the registered rules\n\nThe statistics and criteria "
                "of REPRODUCTION.md (\"Pre-registered: the four-claim study\"), committed "
                "before these runs; a verdict needs all of its registered runs." + amendment
                + "\n\n" + _md(rows))
    rows = [{"claim": c.name, "paper": c.paper_statement, "measured here": c.measured,
             "verdict": f"**{c.verdict}**"} for c in claims.claims(table, per_run)]
    return "## The paper's claims\n\n" + _md(rows)


def write_report(study_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Analyse ``study_dir`` and write report.md, figures and cells.csv; return report.md."""
    study_dir = Path(study_dir)
    runs, problems = frames.load_runs(study_dir)
    if runs.empty:
        raise ValueError(f"no usable parquet files in {study_dir / 'runs'} "
                         f"({len(problems)} skipped)")
    out = Path(out_dir) if out_dir is not None else study_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    per_run, table = frames.finals(runs), frames.cells(runs)
    table = table.assign(tau_epochs=units.tau_epochs(table))
    atomic_write(out / "cells.csv", lambda tmp: table.to_csv(tmp, index=False))
    figs = {}
    if np.isfinite(table["lr"]).any() and len(frames.ranked(table)):
        figs["heatmaps"] = heatmaps.plot_heatmaps(table, per_run, out)[0].name
        figs["learning_curves"] = curves.plot_learning_curves(runs, table, out)[0].name
        decay = curves.plot_decay_curves(per_run, table, out)
        if decay:
            figs["decay_curves"] = decay[0].name
        coords = heatmaps.plot_coordinates(table, out)
        if coords:
            figs["coordinates"] = coords[0].name
    if table["epochs"].nunique() > 1:
        figs["transfer"] = curves.plot_transfer(table, out)[0].name
    path = out / "report.md"
    atomic_write_text(path, markdown(study_dir.name, runs, table, per_run, problems, figs,
                                          out))
    return path
