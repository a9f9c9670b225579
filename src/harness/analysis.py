"""Study analysis: parquet runs -> cells, best cells, separability, the paper's claims.

Input (DESIGN.md section 3): ``<study>/runs/<run_id>.parquet``, one row per evaluated epoch.
Units: ``lr`` = alpha (base learning rate); ``weight_decay`` = lambda actually used;
``lam`` = the lambda axis of the grid (lambda_norm if the study used normalized decay, else
lambda); ``test_error`` = top-1 test error as a fraction in [0, 1]. A *cell* is one grid point
(config, lr, lam), its seeds averaged. Only pandas and numpy: reports build without torch.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

REQUIRED = ("run_id", "status", "dataset", "model", "optimizer", "decay", "lr", "weight_decay",
            "schedule", "epochs", "batch_size", "seed", "epoch", "test_error", "num_classes")
OPTIONAL = {"study": "", "error_message": "", "weight_decay_norm": np.nan, "normalized": False,
            "n_train": np.nan, "train_loss": np.nan}
CONFIG = ("study", "dataset", "model", "optimizer", "decay", "schedule", "epochs", "batch_size",
          "n_train", "normalized", "num_classes")
PANEL_EXTRA = ("schedule", "epochs", "model", "dataset")  # in panel keys when they vary
ORDER = {"optimizer": ("sgd", "adam", "rmsprop"), "decay": ("none", "l2", "decoupled",
         "decoupled_lr"), "schedule": ("constant", "step", "cosine", "warm_restarts")}
USABLE = 0.9  # an alpha column counts for separability if its best error < USABLE * chance


@dataclass(frozen=True)
class Separability:
    """Slope of log2 lambda*(alpha) against log2 alpha: 0 = separable, -1 = coupled (L2)."""

    slope: float
    stderr: float
    n: int
    method: str
    interior: int = 0  # alpha columns whose lambda* lies inside the lambda grid

    @property
    def determined(self) -> bool:
        """A slope needs >= 3 interior minima: lambda* on the grid edge is censored, and a
        line through edge values says where the grid ends, not where the basin is."""
        return self.interior >= 3 and not math.isnan(self.slope)


def fmt_value(x: float) -> str:
    """A grid value as ``2^k`` when it is a power of two, else 3 significant digits."""
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else "unknown"
    k = math.log2(abs(x))
    return f"2^{round(k)}" if abs(k - round(k)) < 1e-9 and x > 0 else f"{x:.3g}"


def load_runs(study_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """Concatenate ``<study_dir>/runs/*.parquet`` (or ``<study_dir>/*.parquet``).

    A file that cannot be read, has no rows, or lacks a required column is skipped and
    reported as one line in the returned problem list (and logged); never fatal.
    """
    root = Path(study_dir)
    run_dir = root / "runs" if (root / "runs").is_dir() else root
    frames, problems = [], []
    for path in sorted(run_dir.glob("*.parquet")):
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # any unreadable file is reported and skipped
            first = (str(exc).splitlines() or [""])[0][:160]
            problems.append(f"{path.name}: unreadable parquet, skipped ({type(exc).__name__}: "
                            f"{first})")
            continue
        missing = [c for c in REQUIRED if c not in df.columns]
        if missing:
            problems.append(f"{path.name}: missing required columns {missing}, skipped")
        elif df.empty:
            problems.append(f"{path.name}: no rows, skipped")
        else:
            frames.append(df)
    for line in problems:
        log.warning(line)
    if not frames:
        return pd.DataFrame(columns=[*REQUIRED, *OPTIONAL]), problems
    runs = pd.concat(frames, ignore_index=True)
    for col, default in OPTIONAL.items():
        if col not in runs.columns:
            runs[col] = default
    runs["normalized"] = runs["normalized"].fillna(False).astype(bool)
    runs["error_message"] = runs["error_message"].fillna("").astype(str)
    return runs, problems


def _run_summary(run: pd.DataFrame) -> dict:
    """One run's final state: failed -> NaN error; diverged (or NaN at the end) -> chance."""
    run = run.sort_values("epoch")
    last = run.iloc[-1]
    status = str(last["status"])
    evaluated = run[(run["epoch"] >= 1) & np.isfinite(run["test_error"].astype(float))]
    chance = 1.0 - 1.0 / float(last["num_classes"])
    failed = status == "failed"
    diverged = not failed and (status == "diverged" or evaluated.empty
                               or evaluated["epoch"].iloc[-1] != last["epoch"])
    error = math.nan if failed else chance if diverged else float(evaluated["test_error"].iloc[-1])
    norm = float(last["weight_decay_norm"])
    wd = run["weight_decay"].astype(float).dropna()  # NaN on a failed cell's epoch-0 row
    wd = float(wd.iloc[0]) if len(wd) else math.nan
    lam = norm if bool(last["normalized"]) and math.isfinite(norm) else wd
    return {**{k: last[k] for k in CONFIG}, "lr": float(last["lr"]), "lam": lam,
            "weight_decay": wd, "weight_decay_norm": norm,
            "run_id": str(last["run_id"]), "failed": failed, "diverged": diverged,
            "final_error": error, "chance": chance,
            "final_epoch": 0 if evaluated.empty else int(evaluated["epoch"].max()),
            "error_message": str(last["error_message"])}


def _aggregate(cell: pd.DataFrame) -> dict:
    """Seeds of one cell -> mean/std of final error over the seeds that did not fail."""
    ok = cell[~cell["failed"]]
    first = cell.iloc[0]
    n_div = int(ok["diverged"].sum())
    status = "failed" if ok.empty else "diverged" if n_div else "completed"
    messages = [m for m in cell["error_message"] if m]
    return {**{k: first[k] for k in (*CONFIG, "lr", "lam", "weight_decay", "weight_decay_norm")},
            "status": status, "test_error": float(ok["final_error"].mean()) if len(ok) else np.nan,
            "test_error_std": float(ok["final_error"].std(ddof=1)) if len(ok) > 1 else np.nan,
            "seeds": len(ok), "n_diverged": n_div, "n_failed": int(cell["failed"].sum()),
            "diverged": n_div > 0, "failed": ok.empty, "chance": float(first["chance"]),
            "final_epoch": int(cell["final_epoch"].max()),
            "run_ids": ";".join(sorted(cell["run_id"])), "error_message": messages[0] if
            messages else ""}


def panel_keys(cells: pd.DataFrame) -> list[str]:
    """optimizer and decay, plus schedule/epochs/model/dataset where the study varies them."""
    return ["optimizer", "decay", *[k for k in PANEL_EXTRA if cells[k].nunique() > 1]]


def panel_label(values: dict, keys: list[str]) -> str:
    """A readable panel key, e.g. ``"adam / decoupled / cosine / 100 ep"``."""
    return " / ".join(f"{values[k]} ep" if k == "epochs" else str(values[k]) for k in keys)


def _sort_key(col: pd.Series) -> pd.Series:
    order = ORDER.get(str(col.name))
    return col.map(lambda v: order.index(v) if v in order else len(order)) if order else col


def cells(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (seeds aggregated) with ``panel``, ``lam``, ``test_error`` (mean final
    top-1 error), ``test_error_std``, ``seeds``, ``diverged``, ``failed`` and the config."""
    if runs.empty:
        raise ValueError("cells: no runs to analyse (empty DataFrame)")
    per_run = pd.DataFrame([_run_summary(g) for _, g in runs.groupby("run_id", sort=True)])
    keys = [*CONFIG, "lr", "lam"]
    out = pd.DataFrame([_aggregate(g) for _, g in per_run.groupby(keys, dropna=False)])
    pkeys = panel_keys(out)
    out.insert(0, "panel", [panel_label(r, pkeys) for r in out.to_dict("records")])
    order = [*pkeys, "lr", "lam"]
    return out.sort_values(order, key=_sort_key, kind="stable").reset_index(drop=True)


def panels(table: pd.DataFrame) -> list[str]:
    """Panel names in display order (optimizer, decay, schedule, ...)."""
    return list(pd.unique(table["panel"]))


def ranked(table: pd.DataFrame) -> pd.DataFrame:
    """Cells that can be ranked: failed cells excluded, diverged ones kept at chance."""
    return table[~table["failed"] & np.isfinite(table["test_error"])]


def top_k(table: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """The k lowest-error cells of each panel, with ``rank`` 1..k, in panel order."""
    r = ranked(table).sort_values("test_error", kind="stable")
    r = r.groupby("panel", sort=False).head(k).copy()
    r["rank"] = r.groupby("panel").cumcount() + 1
    order = {p: i for i, p in enumerate(panels(table))}
    return r.sort_values(["panel", "rank"], key=lambda c: c.map(order) if c.name == "panel"
                         else c).reset_index(drop=True)


def best_cells(table: pd.DataFrame) -> pd.DataFrame:
    """The lowest-error cell of each panel."""
    return top_k(table, 1)


def edge_warnings(table: pd.DataFrame) -> list[str]:
    """One line per panel whose best cell is at the end of its lr or lam grid (>= 2 values)."""
    lines = []
    for _, best in best_cells(table).iterrows():
        grid = ranked(table[table["panel"] == best["panel"]])
        for col, name in (("lr", "lr (alpha)"), ("lam", "lambda")):
            values = np.sort(grid[col].unique())
            if len(values) < 2 or values[0] < best[col] < values[-1]:
                continue
            side = "smallest" if best[col] == values[0] else "largest"
            lines.append(f"{best['panel']}: best cell (lr={fmt_value(best['lr'])}, lambda="
                         f"{fmt_value(best['lam'])}, {100 * best['test_error']:.2f}%) is at the "
                         f"{side} {name} of its grid; the optimum may lie outside it")
    return lines


def _refined_argmin(x: np.ndarray, f: np.ndarray) -> tuple[float, bool]:
    """argmin of f over x; if interior, the vertex of the parabola through the 3 points."""
    i = int(np.argmin(f))
    if i == 0 or i == len(x) - 1:
        return float(x[i]), False
    a, b, _ = np.polyfit(x[i - 1:i + 2], f[i - 1:i + 2], 2)
    vertex = -b / (2 * a) if a > 0 else x[i]
    return float(np.clip(vertex, x[i - 1], x[i + 1])), True


def separability(panel_cells: pd.DataFrame) -> Separability:
    """Slope of the best-lambda line: fit log2 lambda*(alpha) = c + slope * log2 alpha.

    For each alpha column (lam > 0, >= 2 lam values, best error < 0.9 * chance, not all
    diverged): lambda*(alpha) = argmin over lambda of the test error, refined by the vertex
    of a parabola in log2 lambda through the 3 points around the minimum when it is interior.
    If >= 3 columns have an interior minimum, columns whose minimum is on the lambda edge are
    dropped (censored). Least squares gives the slope and its OLS standard error.
    slope ~ 0: separable (the best lambda does not move with alpha: SGDW/AdamW in the
    paper's convention); slope ~ -1: coupled (alpha*lambda constant: SGD+L2, and PyTorch's
    lr-scaled AdamW in the paper's units).
    """
    usable = ranked(panel_cells)
    usable = usable[usable["lam"] > 0]
    points = []
    for lr, col in usable.groupby("lr"):
        col = col.sort_values("lam")
        f = col["test_error"].to_numpy(float)
        if len(col) < 2 or col["diverged"].all() or f.min() >= USABLE * col["chance"].iloc[0]:
            continue
        x_star, interior = _refined_argmin(np.log2(col["lam"].to_numpy(float)), f)
        points.append((math.log2(lr), x_star, interior))
    interior = [p for p in points if p[2]]
    chosen = interior if len(interior) >= 3 else points
    method = (f"parabola-refined argmin over log2 lambda per alpha, OLS on log2 alpha; "
              f"{len(chosen)} of {usable['lr'].nunique()} alpha columns used")
    if len({p[0] for p in chosen}) < 2:
        return Separability(math.nan, math.nan, len(chosen), method, len(interior))
    x, y = np.array([p[0] for p in chosen]), np.array([p[1] for p in chosen])
    slope, intercept = np.polyfit(x, y, 1)
    n = len(x)
    sxx = float(((x - x.mean()) ** 2).sum())
    resid = y - (intercept + slope * x)
    stderr = math.sqrt(float((resid ** 2).sum()) / (n - 2) / sxx) if n > 2 else math.nan
    return Separability(float(slope), stderr, n, method, len(interior))


SUPPORTED, NOT_SUPPORTED = "supported", "not supported"
UNTESTABLE = "not testable with this study"


@dataclass(frozen=True)
class Claim:
    """One headline claim of the paper (DESIGN.md section 1), checked against a study."""

    name: str
    paper_statement: str
    measured: str  # the numbers, one clause per context (schedule, ...), and the criterion
    verdict: str  # SUPPORTED | NOT_SUPPORTED | UNTESTABLE


def _verdict(oks: list[bool]) -> str:
    return UNTESTABLE if not oks else SUPPORTED if all(oks) else NOT_SUPPORTED


def contexts(table: pd.DataFrame, drop: tuple[str, ...]) -> list[tuple[str, pd.DataFrame]]:
    """Split by the panel keys not in ``drop``; label prefix like ``"cosine: "``."""
    keys = [k for k in panel_keys(table) if k not in drop]
    if not keys:
        return [("", table)]
    return [(panel_label(dict(zip(keys, v, strict=True)), keys) + ": ", g)
            for v, g in table.groupby(keys, sort=False)]


def _pick(table: pd.DataFrame, optimizer: str, decays: tuple[str, ...]) -> pd.DataFrame:
    r = ranked(table)
    return r[(r["optimizer"] == optimizer) & r["decay"].isin(decays)]


def signed(x: float) -> str:
    """``+0.12`` style, never ``-0.00``."""
    text = f"{x:+.2f}"
    return "+0.00" if text == "-0.00" else text


def _where(row: pd.Series) -> str:
    return f"{100 * row['test_error']:.2f}% at alpha={fmt_value(row['lr'])}, " \
           f"lambda={fmt_value(row['lam'])}"


def _claim_separable(table: pd.DataFrame) -> Claim:
    lines, oks = [], []
    for ctx, g in contexts(table, ("optimizer", "decay")):
        l2, w = _pick(g, "sgd", ("l2",)), _pick(g, "sgd", ("decoupled",))
        if l2.empty or w.empty:
            continue
        a, b = separability(l2), separability(w)
        if not (a.determined and b.determined):
            lines.append(f"{ctx}lambda* lies inside the grid in only {a.interior} (SGD+L2) and "
                         f"{b.interior} (SGDW) alpha columns; a slope needs 3")
            continue
        oks.append(a.slope < -0.5 and abs(b.slope) < 0.5)
        lines.append(f"{ctx}slope of log2 lambda* on log2 alpha: SGD+L2 {signed(a.slope)} ± "
                     f"{a.stderr:.2f} (n={a.n}), SGDW {signed(b.slope)} ± {b.stderr:.2f} (n={b.n})")
    measured = "; ".join(lines) or "needs sgd/l2 and sgd/decoupled panels"
    return Claim("1. SGD+L2 coupled, SGDW separable",
                 "SGD with L2 has a diagonal basin in (alpha, lambda); SGDW's is separable",
                 measured + " [criterion: L2 slope < -0.5 and |SGDW slope| < 0.5]", _verdict(oks))


def _claim_adam_gain(table: pd.DataFrame) -> Claim:
    lines, oks = [], []
    for ctx, g in contexts(table, ("optimizer", "decay")):
        adam = _pick(g, "adam", tuple(ORDER["decay"]))
        base = adam[(adam["decay"] == "none") | (adam["lam"] == 0)]
        l2 = adam[adam["decay"] == "l2"]
        w = adam[adam["decay"] == "decoupled"]
        w = w if not w.empty else adam[adam["decay"] == "decoupled_lr"]
        common = set(base["lr"]) & set(l2["lr"]) & set(w["lr"])
        if not common:
            continue
        lr = min(common, key=lambda v: abs(math.log2(v / 1e-3)))
        e0 = float(base.loc[base["lr"] == lr, "test_error"].mean())
        e_l2 = float(l2.loc[l2["lr"] == lr, "test_error"].min())
        e_w = float(w.loc[w["lr"] == lr, "test_error"].min())
        g_l2, g_w = (e0 - e_l2) / e0, (e0 - e_w) / e0
        oks.append(g_w >= 0.05 and g_l2 <= g_w / 2)
        lines.append(f"{ctx}at alpha={fmt_value(lr)} ({lr:.3g}): lambda=0 {100 * e0:.2f}%, "
                     f"best Adam+L2 {100 * e_l2:.2f}% (gain {100 * g_l2:.1f}% rel.), best "
                     f"Adam {w['decay'].iloc[0]} {100 * e_w:.2f}% (gain {100 * g_w:.1f}% rel.)")
    measured = "; ".join(lines) or "needs adam lambda=0 (or decay=none), l2 and decoupled cells"
    return Claim("2. AdamW gains over lambda=0, Adam+L2 does not",
                 "Adam gains nothing from L2 over lambda=0; AdamW gains clearly "
                 "(15% relative at alpha=0.001)",
                 measured + " [criterion: AdamW gain >= 5% and Adam+L2 gain <= half of it]",
                 _verdict(oks))


def _claim_adamw_rivals_sgd(table: pd.DataFrame) -> Claim:
    lines, oks = [], []
    for ctx, g in contexts(table, ("optimizer", "decay")):
        w, s = _pick(g, "adam", ("decoupled",)), _pick(g, "sgd", ("l2", "decoupled"))
        if w.empty or s.empty:
            continue
        bw, bs = w.loc[w["test_error"].idxmin()], s.loc[s["test_error"].idxmin()]
        rel = (bw["test_error"] - bs["test_error"]) / bs["test_error"]
        oks.append(rel <= 0.10)
        lines.append(f"{ctx}best AdamW {_where(bw)} vs best SGD(W) ({bs['decay']}) {_where(bs)}:"
                     f" {100 * rel:+.1f}% relative")
    measured = "; ".join(lines) or "needs adam/decoupled and sgd/l2 or sgd/decoupled panels"
    return Claim("3. AdamW rivals SGD(W)", "AdamW's best test error rivals SGD(W)'s",
                 measured + " [criterion: AdamW within 10% relative of SGD(W)]", _verdict(oks))


def _claim_transfer(table: pd.DataFrame) -> Claim:
    name = "4. best lambda_norm transfers across budgets"
    statement = "with normalized weight decay the best lambda_norm is the same for every budget"
    if table["epochs"].nunique() < 2 or not table["normalized"].any():
        why = "one epoch budget" if table["epochs"].nunique() < 2 else "no normalized decay"
        return Claim(name, statement, f"the study has {why}", UNTESTABLE)
    lines, oks = [], []
    for ctx, g in contexts(table, ("epochs",)):
        g = ranked(g)
        g = g[(g["lam"] > 0) & g["normalized"]]
        per = g.groupby(["epochs", "lam"])["test_error"].min()  # best over alpha
        best = {ep: lam for ep, lam in per.groupby(level="epochs").idxmin().to_list()}
        if len(best) < 2:
            continue
        spread = math.log2(max(best.values()) / min(best.values()))
        oks.append(spread <= 1 + 1e-9)
        lines.append(f"{ctx}best lambda_norm " + ", ".join(
            f"{fmt_value(lam)} @ {ep} ep" for ep, lam in sorted(best.items()))
            + f" (spread {spread:.1f} octaves)")
    return Claim(name, statement, "; ".join(lines) + " [criterion: spread <= 1 octave (x2)]",
                 _verdict(oks))


def claims(table: pd.DataFrame) -> list[Claim]:
    """The paper's four headline claims, each measured on ``cells(runs)``."""
    return [_claim_separable(table), _claim_adam_gain(table), _claim_adamw_rivals_sgd(table),
            _claim_transfer(table)]
