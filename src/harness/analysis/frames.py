"""Study analysis: parquet runs -> one row per run (``finals``) -> one row per cell (``cells``).

Input (docs/DESIGN.md section 3): ``<study>/runs/<run_id>.parquet``, one row per evaluated epoch.
Units: ``lr`` = alpha (base learning rate); ``weight_decay`` = lambda actually used;
``lam`` = the lambda axis of the grid (lambda_norm if the study used normalized decay, else
lambda); errors are top-1 fractions in [0, 1]. A *cell* is one grid point (config, lr, lam),
its seeds averaged. ``val_error`` (error on a split held out of the training set) is used to
choose cells when the parquet has it; ``test_error`` scores them. Only pandas and numpy:
reports build without torch. Statistics live in ``harness.analysis.stats``, verdicts in
``harness.analysis.claims``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from harness.spec.decay import DECAY_MODES
from harness.spec.optimizer import OPTIMIZERS
from harness.spec.records import STATUSES
from harness.spec.schedule import SCHEDULES

log = logging.getLogger(__name__)

REQUIRED = ("run_id", "status", "dataset", "model", "optimizer", "decay", "lr", "weight_decay",
            "schedule", "epochs", "batch_size", "seed", "epoch", "test_error", "num_classes")
OPTIONAL = {"study": "", "error_message": "", "weight_decay_norm": np.nan, "normalized": False,
            "n_train": np.nan, "train_loss": np.nan, "val_error": np.nan}
NUMERIC = ("lr", "weight_decay", "weight_decay_norm", "epochs", "batch_size", "seed", "epoch",
           "test_error", "val_error", "train_loss", "num_classes", "n_train")
NOT_NULL = ("run_id", "status", "optimizer", "decay", "lr", "epoch", "seed", "epochs",
            "batch_size")
INTEGER = ("epochs", "batch_size", "seed", "epoch")
CONFIG = ("study", "dataset", "model", "optimizer", "decay", "schedule", "epochs", "batch_size",
          "n_train", "normalized", "num_classes")
UNKNOWN_WHEN_FAILED = ("n_train", "num_classes")  # null on a cell that failed before data
PANEL_EXTRA = ("schedule", "epochs", "model", "dataset")  # in panel keys when they vary
ORDER = {"optimizer": OPTIMIZERS, "decay": DECAY_MODES, "schedule": SCHEDULES}
USABLE = 0.9  # a cell enters a fit if its error < USABLE * chance; a run at or above it
              # did not train (`at_chance`)


def fmt_value(x: float) -> str:
    """A grid value as ``2^k`` when it is a power of two (``2^-4.5`` on a half-octave grid),
    else 3 significant digits."""
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else "unknown"
    k = math.log2(abs(x))
    if x > 0 and abs(2 * k - round(2 * k)) < 1e-9:
        return f"2^{round(k)}" if round(2 * k) % 2 == 0 else f"2^{round(2 * k) / 2:g}"
    return f"{x:.3g}"


def signed(x: float) -> str:
    """``+0.12`` style, never ``-0.00``."""
    text = f"{x:+.2f}"
    return "+0.00" if text == "-0.00" else text


def _problem(df: pd.DataFrame) -> str | None:
    """Why a run's rows cannot be used (None if they can); coerces numeric columns in place."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        return f"missing required columns {missing}"
    if df.empty:
        return "no rows"
    for col in (c for c in NUMERIC if c in df.columns):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            return f"{col} has a non-numeric value {df.loc[bad, col].iloc[0]!r}"
        df[col] = values.astype(float)
    nulls = [c for c in NOT_NULL if df[c].isna().any()]
    if nulls:
        return f"null values in {nulls}"
    for col, valid in (("optimizer", OPTIMIZERS), ("decay", DECAY_MODES), ("status", STATUSES)):
        unknown = sorted(set(df[col].astype(str)) - set(valid))
        if unknown:
            return f"unknown {col} {unknown[0]!r} (valid: {', '.join(valid)})"
    for col in INTEGER:
        if not (df[col] == df[col].round()).all():
            return f"{col} has a non-integer value"
        df[col] = df[col].astype("int64")
    if df["run_id"].nunique() != 1:
        return f"{df['run_id'].nunique()} run_ids in one file"
    if not (df["lr"] > 0).all():
        return "lr must be > 0"
    if "normalized" in df and not df["normalized"].dropna().map(
            lambda v: isinstance(v, (bool, np.bool_))).all():
        return "normalized must be true or false"
    k = df["num_classes"].iloc[-1]
    if df["status"].iloc[-1] != "failed" and not (math.isfinite(k) and k >= 2):
        return f"num_classes={k!r}: chance level unknown for a {df['status'].iloc[-1]} run"
    return None


def _summary_problem(df: pd.DataFrame) -> str | None:
    """Whatever else stops a run from being summarised, as one line (None if nothing)."""
    try:
        _run_summary(with_optional(df))
    except Exception as exc:  # noqa: BLE001 - one unusable run never stops a report
        return f"cannot be summarised ({type(exc).__name__}: {exc})"
    return None


def load_runs(study_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """Concatenate ``<study_dir>/runs/*.parquet`` (or ``<study_dir>/*.parquet``).

    A file that cannot be read or used (missing columns, no rows, a non-numeric epoch, an
    unknown optimizer, nulls where a value is needed, no chance level) is skipped and reported
    as one line in the returned problem list (and logged); never fatal.
    Files of every schema version read alike (harness.spec.records; `harness migrate`): a
    column that is null in every row of the study (one an older file lacked and the migration
    added as null, e.g. `cpu_model`) is dropped, so the study reads as if it was not recorded.
    """
    root = Path(study_dir)
    run_dir = root / "runs" if (root / "runs").is_dir() else root
    frames, problems = [], []
    for path in sorted(run_dir.glob("*.parquet")):
        try:
            df = pd.read_parquet(path)
            why = _problem(df) or _summary_problem(df)
        except Exception as exc:  # any unreadable file is reported and skipped
            first = (str(exc).splitlines() or [""])[0][:160]
            why = f"unreadable parquet ({type(exc).__name__}: {first})"
        if why:
            problems.append(f"{path.name}: {why}, skipped")
        else:
            frames.append(df)
    for line in problems:
        log.warning(line)
    if not frames:
        return pd.DataFrame(columns=[*REQUIRED, *OPTIONAL]), problems
    runs = pd.concat(frames, ignore_index=True)
    unrecorded = [c for c in runs.columns if c not in REQUIRED and runs[c].isna().all()]
    return with_optional(runs.drop(columns=unrecorded)), problems


def with_optional(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with every OPTIONAL column (its default where absent) and clean flags."""
    runs = runs.copy()
    for col, default in OPTIONAL.items():
        if col not in runs.columns:
            runs[col] = default
    runs["normalized"] = runs["normalized"].fillna(False).astype(bool)
    runs["error_message"] = runs["error_message"].fillna("").astype(str)
    return runs


def _last_finite(run: pd.DataFrame, col: str) -> float:
    values = run.loc[run["epoch"] >= 1, col].astype(float)
    values = values[np.isfinite(values)]
    return float(values.iloc[-1]) if len(values) else math.nan


def _run_summary(run: pd.DataFrame) -> dict:
    """One run's final state: failed -> NaN error; diverged (or NaN at the end) -> chance."""
    run = run.sort_values("epoch")
    last = run.iloc[-1]
    status = str(last["status"])
    evaluated = run[(run["epoch"] >= 1) & np.isfinite(run["test_error"].astype(float))]
    k = float(last["num_classes"])
    chance = 1.0 - 1.0 / k if math.isfinite(k) and k >= 2 else math.nan
    failed = status == "failed"
    diverged = not failed and (status == "diverged" or evaluated.empty
                               or evaluated["epoch"].iloc[-1] != last["epoch"])
    error = math.nan if failed else chance if diverged else float(evaluated["test_error"].iloc[-1])
    val = math.nan if failed else chance if diverged else _last_finite(run, "val_error")
    norm = float(last["weight_decay_norm"])
    wd = run["weight_decay"].astype(float).dropna()  # NaN on a failed cell's epoch-0 row
    wd = float(wd.iloc[0]) if len(wd) else math.nan
    lam = norm if bool(last["normalized"]) and math.isfinite(norm) else wd
    return {**{k: last[k] for k in CONFIG}, "lr": float(last["lr"]), "lam": lam,
            "weight_decay": wd, "weight_decay_norm": norm, "seed": int(last["seed"]),
            "run_id": str(last["run_id"]), "failed": failed, "diverged": diverged,
            "test_error": error, "val_error": val, "chance": chance,
            "final_epoch": 0 if evaluated.empty else int(evaluated["epoch"].max()),
            "error_message": str(last["error_message"])}


def at_chance(runs: pd.DataFrame) -> pd.Series:
    """The runs (rows of `finals`) that did not train: final validation error (test error
    where none is recorded) at or above USABLE x chance. A diverged run counts at chance."""
    err = runs["val_error"].where(np.isfinite(runs["val_error"]), runs["test_error"])
    return ~runs["failed"] & (err >= USABLE * runs["chance"])


def _aggregate(cell: pd.DataFrame) -> dict:
    """Seeds of one cell -> mean/std of final errors over the seeds that did not fail."""
    ok = cell[~cell["failed"]]
    first = ok.iloc[0] if len(ok) else cell.iloc[0]
    n_div = int(ok["diverged"].sum())
    status = "failed" if ok.empty else "diverged" if n_div else "completed"
    messages = [m for m in cell["error_message"] if m]
    return {**{k: first[k] for k in (*CONFIG, "lr", "lam", "weight_decay", "weight_decay_norm")},
            "status": status, "test_error": float(ok["test_error"].mean()) if len(ok) else np.nan,
            "test_error_std": float(ok["test_error"].std(ddof=1)) if len(ok) > 1 else np.nan,
            "val_error": float(ok["val_error"].mean()) if len(ok) else np.nan,
            "seeds": len(ok), "n_diverged": n_div, "n_at_chance": int(at_chance(ok).sum()),
            "n_failed": int(cell["failed"].sum()),
            "diverged": n_div > 0, "failed": ok.empty, "chance": float(cell["chance"].max()),
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


def finals(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its final ``test_error`` (and ``val_error``), seed, ``panel``, config."""
    if runs.empty:
        raise ValueError("no runs to analyse (empty DataFrame)")
    runs = with_optional(runs)
    out = pd.DataFrame([_run_summary(g) for _, g in runs.groupby("run_id", sort=True)])
    pkeys = panel_keys(out)
    out.insert(0, "panel", [panel_label(r, pkeys) for r in out.to_dict("records")])
    return out.sort_values([*pkeys, "lr", "lam", "seed"], key=_sort_key,
                           kind="stable").reset_index(drop=True)


def cells(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (seeds aggregated) with ``panel``, ``lam``, ``test_error`` (mean final
    top-1 error), ``test_error_std``, ``val_error``, ``seeds``, ``diverged``, ``failed``."""
    per_run = finals(runs)
    keys = ["panel", *[k for k in CONFIG if k not in UNKNOWN_WHEN_FAILED], "lr", "lam"]
    groups = per_run.groupby(keys, dropna=False, sort=False)
    out = pd.DataFrame([{"panel": g["panel"].iloc[0], **_aggregate(g)} for _, g in groups])
    return out.reset_index(drop=True)


def selection_metric(table: pd.DataFrame) -> str:
    """``val_error`` when every ranked cell has one (choose on validation, score on test);
    else ``test_error`` (then choice and score share the test set, and reports say so)."""
    r = ranked(table)
    return "val_error" if len(r) and np.isfinite(r["val_error"].astype(float)).all() \
        else "test_error"


def panels(table: pd.DataFrame) -> list[str]:
    """Panel names in display order (optimizer, decay, schedule, ...)."""
    return list(pd.unique(table["panel"]))


def ranked(table: pd.DataFrame) -> pd.DataFrame:
    """Cells that can be ranked: failed cells excluded, diverged ones kept at chance."""
    return table[~table["failed"] & np.isfinite(table["test_error"])]


def top_k(table: pd.DataFrame, k: int = 10, by: str = "test_error") -> pd.DataFrame:
    """The k lowest cells of each panel by ``by``, with ``rank`` 1..k, in panel order."""
    r = ranked(table).sort_values(by, kind="stable")
    r = r.groupby("panel", sort=False).head(k).copy()
    r["rank"] = r.groupby("panel").cumcount() + 1
    order = {p: i for i, p in enumerate(panels(table))}
    return r.sort_values(["panel", "rank"], key=lambda c: c.map(order) if c.name == "panel"
                         else c).reset_index(drop=True)


def best_cells(table: pd.DataFrame) -> pd.DataFrame:
    """The cell of each panel chosen by ``selection_metric`` (validation when recorded)."""
    return top_k(table, 1, by=selection_metric(table))


def on_edge(grid: pd.DataFrame, row: pd.Series, col: str) -> str:
    """'smallest'/'largest' if ``row[col]`` is an end of ``grid[col]`` (>= 2 values), else ''."""
    values = np.sort(grid[col].dropna().unique())
    if len(values) < 2 or values[0] < row[col] < values[-1]:
        return ""
    return "smallest" if row[col] == values[0] else "largest"


def edge_warnings(table: pd.DataFrame) -> list[str]:
    """One line per panel whose best cell is at the end of its lr or lam grid (>= 2 values)."""
    lines = []
    for _, best in best_cells(table).iterrows():
        grid = ranked(table[table["panel"] == best["panel"]])
        for col, name in (("lr", "lr (alpha)"), ("lam", "lambda")):
            side = on_edge(grid, best, col)
            if side:
                lines.append(f"{best['panel']}: best cell (lr={fmt_value(best['lr'])}, lambda="
                             f"{fmt_value(best['lam'])}, {100 * best['test_error']:.2f}%) is at "
                             f"the {side} {name} of its grid; the optimum may lie outside it")
    return lines


def contexts(table: pd.DataFrame, drop: tuple[str, ...]) -> list[tuple[str, pd.DataFrame]]:
    """Split by the panel keys not in ``drop``; label prefix like ``"cosine: "``."""
    keys = [k for k in panel_keys(table) if k not in drop]
    if not keys:
        return [("", table)]
    return [(panel_label(dict(zip(keys, v, strict=True)), keys) + ": ", g)
            for v, g in table.groupby(keys, sort=False)]
