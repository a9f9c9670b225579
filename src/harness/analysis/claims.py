"""The paper's four headline claims (docs/DESIGN.md section 1), each checked against a study.

Every verdict follows a stated criterion from numbers printed beside their noise:
  supported | not supported | contradicted | not testable with this study
"Not testable" when the optimum sits on the grid edge, when there is no noise estimate (one
seed), or when the noise exceeds the effect. Cells are chosen on ``val_error`` when the parquet
records it, on the test error otherwise (the measured text then says so), and scored on the
test error. Differences are paired over seeds (``stats.difference``); "resolved" means 0 lies
outside the difference's 95% t interval (n - 1 degrees of freedom).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from harness.analysis import frames, registered, stats
from harness.analysis.frames import fmt_value

SUPPORTED, NOT_SUPPORTED, CONTRADICTED = "supported", "not supported", "contradicted"
UNTESTABLE = "not testable with this study"


@dataclass(frozen=True)
class Claim:
    name: str
    paper_statement: str
    measured: str   # the numbers with their noise, one clause per context, and the criterion
    verdict: str


def _combine(verdicts: list[str]) -> str:
    if not verdicts:
        return UNTESTABLE
    for v in (CONTRADICTED, NOT_SUPPORTED, UNTESTABLE):
        if v in verdicts:
            return v
    return SUPPORTED


def _pick(table: pd.DataFrame, optimizer: str, decays: tuple[str, ...]) -> pd.DataFrame:
    r = frames.ranked(table)
    return r[(r["optimizer"] == optimizer) & r["decay"].isin(decays)]


def _runs(per_run: pd.DataFrame, cell: pd.Series) -> pd.DataFrame:
    """The non-failed seeds of one cell."""
    m = (per_run["panel"] == cell["panel"]) & (per_run["lr"] == cell["lr"]) & \
        (per_run["lam"].fillna(-1) == (cell["lam"] if pd.notna(cell["lam"]) else -1))
    return per_run[m & ~per_run["failed"]]


def _choose(cands: pd.DataFrame, by: str) -> tuple[pd.Series, str]:
    """The candidate with the lowest ``by``; its grid edge ('smallest λ', ...) or ''."""
    best = cands.loc[cands[by].idxmin()]
    edge = [f"{side} {name}" for col, name in (("lam", "λ"), ("lr", "α"))
            if (side := frames.on_edge(cands, best, col))]
    return best, ", ".join(edge)


def _where(row: pd.Series) -> str:
    return f"α={fmt_value(row['lr'])}, λ={fmt_value(row['lam'])}"


def _selection_note(by: str) -> str:
    return ("chosen on validation error, scored on test error" if by == "val_error" else
            "chosen and scored on the same test set (no val_error recorded)")


def _claim_separable(table: pd.DataFrame, per_run: pd.DataFrame) -> Claim:
    lines, verdicts = [], []
    for ctx, g in frames.contexts(table, ("optimizer", "decay")):
        l2, w = _pick(g, "sgd", ("l2",)), _pick(g, "sgd", ("decoupled",))
        if l2.empty or w.empty:
            continue
        fl2, fw = (stats.panel_fits(c, per_run[per_run["panel"] == c["panel"].iloc[0]])
                   for c in (l2, w))
        basin = fl2.basin.determined and fw.basin.determined
        a, b = (fl2.basin, fw.basin) if basin else (fl2.frontier, fw.frontier)
        verdicts.append(_separable_verdict(a, b))
        lines.append(f"{ctx}basin ridge slope SGD+L2 {fl2.basin.text()}, SGDW "
                     f"{fw.basin.text()}; damage frontier SGD+L2 (+{100 * fl2.margin:.1f} pts) "
                     f"{fl2.frontier.text()}, SGDW (+{100 * fw.margin:.1f} pts) "
                     f"{fw.frontier.text()}; verdict from the {'basin' if basin else 'frontier'}")
    measured = "; ".join(lines) or "needs sgd/l2 and sgd/decoupled panels"
    return Claim("1. SGD+L2 coupled, SGDW separable",
                 "SGD with L2 has a diagonal basin in (alpha, lambda); SGDW's is separable",
                 measured + " [criterion (95% intervals): supported if SGD+L2's interval lies "
                 "below SGDW's, SGD+L2 < -0.5 and |SGDW| < 0.5; contradicted if SGDW's "
                 "interval lies below -0.5 or SGD+L2's above -0.5; not testable if either "
                 "slope is undetermined]", _combine(verdicts))


def _separable_verdict(a: stats.Slope, b: stats.Slope) -> str:
    if not (a.determined and b.determined):
        return UNTESTABLE
    if b.high < -0.5 or a.low > -0.5:
        return CONTRADICTED
    ok = a.high < b.low and a.estimate < -0.5 and abs(b.estimate) < 0.5
    return SUPPORTED if ok else NOT_SUPPORTED


def _claim_adam_gain(table: pd.DataFrame, per_run: pd.DataFrame) -> Claim:
    lines, verdicts = [], []
    by = frames.selection_metric(table)
    for ctx, g in frames.contexts(table, ("optimizer", "decay")):
        adam = _pick(g, "adam", frames.DECAY_MODES)
        base = adam[(adam["decay"] == "none") | (adam["lam"] == 0)]
        l2 = adam[(adam["decay"] == "l2") & (adam["lam"] > 0)]
        w = adam[(adam["decay"] == "decoupled") & (adam["lam"] > 0)]
        w = w if not w.empty else adam[(adam["decay"] == "decoupled_lr") & (adam["lam"] > 0)]
        common = set(base["lr"]) & set(l2["lr"]) & set(w["lr"])
        if not common:
            continue
        lr = min(common, key=lambda v: abs(math.log2(v / 1e-3)))
        b0 = base[base["lr"] == lr].iloc[0]
        (cl2, edge_l2), (cw, edge_w) = _choose(l2[l2["lr"] == lr], by), \
            _choose(w[w["lr"] == lr], by)
        r0, rl2, rw = _runs(per_run, b0), _runs(per_run, cl2), _runs(per_run, cw)
        gain_w, gain_l2 = stats.difference(r0, rw), stats.difference(r0, rl2)
        w_vs_l2 = stats.difference(rl2, rw)
        edges = [f"Adam+L2's best is at the {edge_l2}"] * bool(edge_l2) + \
            [f"AdamW's best is at the {edge_w}"] * bool(edge_w)
        verdicts.append(_gain_verdict(gain_w, gain_l2, w_vs_l2, edges))
        lines.append(f"{ctx}at α={fmt_value(lr)}: λ=0 {100 * b0['test_error']:.2f}%, Adam+L2 "
                     f"({_where(cl2)}) {100 * cl2['test_error']:.2f}%, AdamW ({_where(cw)}) "
                     f"{100 * cw['test_error']:.2f}%; gain over λ=0: AdamW {gain_w.text()}, "
                     f"Adam+L2 {gain_l2.text()}; AdamW better than Adam+L2 by {w_vs_l2.text()}"
                     + "".join(f"; {e}" for e in edges) + f"; λ {_selection_note(by)}")
    measured = "; ".join(lines) or "needs adam lambda=0 (or decay=none), l2 and decoupled cells"
    return Claim("2. AdamW gains over lambda=0, Adam+L2 does not",
                 "Adam gains nothing from L2 over lambda=0; AdamW gains clearly "
                 "(15% relative at alpha=0.001)",
                 measured + " [criterion (resolved = 0 outside the 95% t interval): supported "
                 "if AdamW's gain and its lead over Adam+L2 are both resolved and positive; "
                 "contradicted if Adam+L2 is resolved better than AdamW, or Adam+L2's gain is "
                 "resolved while AdamW's lead is not; not testable if a best λ is on the grid "
                 "edge, there is one seed, or neither gain is resolved]", _combine(verdicts))


def _gain_verdict(gain_w: stats.Diff, gain_l2: stats.Diff, w_vs_l2: stats.Diff,
                  edges: list[str]) -> str:
    if edges or not all(math.isfinite(d.se) for d in (gain_w, gain_l2, w_vs_l2)):
        return UNTESTABLE
    if (w_vs_l2.resolved and w_vs_l2.mean < 0) or \
            (gain_l2.resolved and gain_l2.mean > 0 and not w_vs_l2.resolved):
        return CONTRADICTED
    if not (gain_w.resolved or gain_l2.resolved):
        return UNTESTABLE  # the noise exceeds the effect of decay itself
    ok = gain_w.resolved and gain_w.mean > 0 and w_vs_l2.resolved and w_vs_l2.mean > 0
    return SUPPORTED if ok else NOT_SUPPORTED


def _claim_adamw_rivals_sgd(table: pd.DataFrame, per_run: pd.DataFrame) -> Claim:
    lines, verdicts = [], []
    by = frames.selection_metric(table)
    for ctx, g in frames.contexts(table, ("optimizer", "decay")):
        w, s = _pick(g, "adam", ("decoupled",)), _pick(g, "sgd", ("l2", "decoupled"))
        w, s = w[w["lam"] > 0], s[s["lam"] > 0]
        if w.empty or s.empty:
            continue
        (bw, edge_w), (bs, edge_s) = _choose(w, by), _choose(s, by)
        d = stats.difference(_runs(per_run, bw), _runs(per_run, bs))
        limit = 0.10 * bs["test_error"]
        edges = [f"{name}'s best is at the {e}" for name, e in (("AdamW", edge_w),
                                                                 ("SGD(W)", edge_s)) if e]
        verdict = UNTESTABLE if edges or not math.isfinite(d.se) else \
            SUPPORTED if d.mean + d.half <= limit else \
            CONTRADICTED if d.mean - d.half > limit else UNTESTABLE
        verdicts.append(verdict)
        lines.append(f"{ctx}best AdamW {100 * bw['test_error']:.2f}% ({_where(bw)}) vs best "
                     f"SGD(W) ({bs['decay']}) {100 * bs['test_error']:.2f}% ({_where(bs)}): "
                     f"AdamW − SGD(W) = {d.text()}, 10% of SGD(W) = {100 * limit:.2f} pts"
                     + "".join(f"; {e}" for e in edges) + f"; cells {_selection_note(by)}")
    measured = "; ".join(lines) or "needs adam/decoupled and sgd/l2 or sgd/decoupled panels"
    return Claim("3. AdamW rivals SGD(W)", "AdamW's best test error rivals SGD(W)'s",
                 measured + " [criterion: supported if AdamW − SGD(W) + its 95% t half-width ≤ "
                 "10% of SGD(W)'s error; contradicted if AdamW − SGD(W) − that half-width > 10%; "
                 "otherwise, or on a grid "
                 "edge or with one seed, not testable]", _combine(verdicts))


def _claim_transfer(table: pd.DataFrame, per_run: pd.DataFrame) -> Claim:
    """The slope of the best log2 lambda_norm on log2 epochs, located and bootstrapped as the
    registered claim 4 does (registered.optimum_slope): a spread of best grid values cannot
    tell the hypotheses apart (on a 1-octave grid over a 4x budget range, raw-lambda transfer,
    slope +0.5, moves the best lambda_norm by one octave: "spread <= 1 octave" let it pass)."""
    name = "4. best lambda_norm transfers across budgets"
    statement = "with normalized weight decay the best lambda_norm is the same for every budget"
    if table["epochs"].nunique() < 2 or not table["normalized"].any():
        why = "one epoch budget" if table["epochs"].nunique() < 2 else "no normalized decay"
        return Claim(name, statement, f"the study has {why}", UNTESTABLE)
    by = frames.selection_metric(table)
    lines, verdicts = [], []
    for ctx, g in frames.contexts(table, ("epochs",)):
        g = g[(g["lam"] > 0) & g["normalized"]]
        runs = per_run[per_run["panel"].isin(set(g["panel"])) & (per_run["lam"] > 0)
                       & ~per_run["failed"]]
        if runs["epochs"].nunique() < 2:
            continue
        s = registered.optimum_slope(registered.xyz(runs, "epochs", by))
        reading = registered.transfer_reading(s)
        verdicts.append(SUPPORTED if reading.startswith("+0.0") else
                        NOT_SUPPORTED if reading[:1] in "+-" else UNTESTABLE)
        lines.append(f"{ctx}best log2 lambda_norm on log2 epochs: "
                     f"{registered.slope_text(s, 'epochs')}, reads {reading}")
    return Claim(name, statement, "; ".join(lines) + " [criterion: the slope's 95% seed-noise "
                 f"bootstrap interval holds exactly one of {registered.predictions()}: +0.0 is "
                 "supported, +0.5 or -0.5 not supported; none or several, one seed, or an "
                 f"optimum on the grid edge: not testable; {_selection_note(by)}]",
                 _combine(verdicts))


def claims(table: pd.DataFrame, per_run: pd.DataFrame) -> list[Claim]:
    """The four headline claims, from ``frames.cells`` and ``frames.finals`` of a study."""
    return [f(table, per_run) for f in (_claim_separable, _claim_adam_gain,
                                        _claim_adamw_rivals_sgd, _claim_transfer)]
