"""analysis.py on planted error surfaces written as real parquet files.

error(alpha, lam) = BASE + A*(log2 lam - log2 lam*(alpha))^2 + B*(log2 alpha - c)^2 with
log2 lam*(alpha) = k0 + s*log2 alpha: s = 0 is separable, s = -1 is coupled.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import analysis

ALPHAS = [2.0**k for k in range(-10, -2)]  # 8 values
LAMS = [2.0**k for k in range(-10, -2)]
BASE, A, B = 0.05, 0.01, 0.004


def planted(alpha: float, lam: float, s: float, k0: float, c: float) -> float:
    """The planted final test error (fraction), capped below chance."""
    la = math.log2(alpha)
    return min(0.85, BASE + A * (math.log2(lam) - (k0 + s * la)) ** 2 + B * (la - c) ** 2)


def write_cell(run_dir: Path, final_error: float, *, lr: float, lam: float, seed: int = 0,
               optimizer: str = "sgd", decay: str = "decoupled", status: str = "completed",
               epochs: int = 3, normalized: bool = False, n_epochs: int | None = None) -> str:
    """One cell's parquet with every contract column; test error falls to final_error."""
    run_id = f"{optimizer}-{decay}-{lr:.3g}-{lam:.3g}-{epochs}-{seed}"
    n = epochs if n_epochs is None else n_epochs
    err = [final_error + 0.05 * (n - e) for e in range(1, n + 1)] if n else [math.nan]
    if status == "diverged":
        err[-1] = math.nan
    wd = lam * math.sqrt(128 / (50000 * epochs)) if normalized else lam
    wd = math.nan if not n else wd  # records.py: lambda is a per-epoch metric
    rows = pd.DataFrame({
        "run_id": run_id, "study": "planted", "status": status,
        "error_message": "boom" if status == "failed" else "", "dataset": "cifar10",
        "model": "resnet20", "optimizer": optimizer, "decay": decay, "lr": lr,
        "weight_decay": wd, "weight_decay_norm": lam if normalized else math.nan,
        "normalized": normalized, "schedule": "cosine", "epochs": epochs, "batch_size": 128,
        "n_train": 50000, "seed": seed, "epoch": list(range(1, n + 1)) if n else [0],
        "step": [391 * e for e in range(1, n + 1)] if n else [0], "lr_multiplier": 1.0,
        "train_loss": [2.0 / e for e in range(1, n + 1)] if n else [math.nan],
        "train_error": err, "test_loss": err, "test_error": err, "test_error_top5": err,
        "param_norm": 10.0, "elapsed_s": 1.0, "num_classes": 10, "git_sha": "abc1234",
        "harness_version": "0.1.0", "torch_version": "2.4.0", "device": "cpu"})
    run_dir.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(run_dir / f"{run_id}.parquet")
    return run_id


def write_surface(run_dir: Path, s: float, k0: float, c: float, noise: float = 0.0,
                  **kw) -> None:
    rng = np.random.default_rng(0)
    for alpha in ALPHAS:
        for lam in LAMS:
            error = planted(alpha, lam, s, k0, c) + noise * rng.standard_normal()
            write_cell(run_dir, error, lr=alpha, lam=lam, **kw)


def load_cells(study: Path) -> pd.DataFrame:
    runs, problems = analysis.load_runs(study)
    assert problems == []
    return analysis.cells(runs)


@pytest.mark.parametrize("s,k0", [(0.0, -6.3), (-1.0, -13.4)])
def test_optimum_top10_and_slope(tmp_path: Path, s: float, k0: float) -> None:
    write_surface(tmp_path / "runs", s, k0, c=-6)
    table = load_cells(tmp_path)
    assert len(table) == 64 and (table["seeds"] == 1).all()
    best = analysis.best_cells(table).iloc[0]
    assert best["lr"] == 2.0**-6
    assert best["lam"] == 2.0 ** round(k0 + s * -6)
    assert best["test_error"] == pytest.approx(planted(best["lr"], best["lam"], s, k0, -6))
    truth = sorted((planted(a, m, s, k0, -6), a, m) for a in ALPHAS for m in LAMS)[:10]
    top = analysis.top_k(table, 10)
    assert set(zip(top["lr"], top["lam"], strict=True)) == {(a, m) for _, a, m in truth}
    assert list(top["rank"]) == list(range(1, 11))
    sep = analysis.separability(table)
    assert abs(sep.slope - s) < 0.15, sep
    assert sep.n >= 5
    assert analysis.edge_warnings(table) == []


@pytest.mark.parametrize("s,k0", [(0.0, -6.3), (-1.0, -13.4)])
def test_separability_with_noise(tmp_path: Path, s: float, k0: float) -> None:
    write_surface(tmp_path / "runs", s, k0, c=-6, noise=0.002)  # 0.2 points of error noise
    sep = analysis.separability(load_cells(tmp_path))
    assert abs(sep.slope - s) < 0.15 and 0 < sep.stderr < 0.1, sep


def test_edge_warning_when_optimum_on_grid_edge(tmp_path: Path) -> None:
    write_surface(tmp_path / "runs", 0.0, -9.8, c=-10)  # best alpha and lambda are the smallest
    warnings = analysis.edge_warnings(load_cells(tmp_path))
    assert len(warnings) == 2
    assert "smallest lr" in warnings[0] and "smallest lambda" in warnings[1]
    assert warnings[0].startswith("sgd / decoupled: best cell (lr=2^-10, lambda=2^-10")


def test_diverged_failed_and_seeds(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_cell(runs, 0.2, lr=0.5, lam=0.01, status="diverged")
    write_cell(runs, 0.2, lr=0.5, lam=0.02, status="failed", n_epochs=0)
    for seed, err in enumerate([0.10, 0.12, 0.14]):
        write_cell(runs, err, lr=0.1, lam=0.01, seed=seed)
    write_cell(runs, 0.2, lr=0.5, lam=0.03, status="failed", n_epochs=0, normalized=True)
    table = load_cells(tmp_path)
    unknown = table[table["lam"].isna()].iloc[0]  # failed, not normalized: lambda not recorded
    assert unknown["failed"] and unknown["lr"] == 0.5
    table = table.dropna(subset=["lam"]).set_index(["lr", "lam"])
    div = table.loc[(0.5, 0.01)]
    assert div["diverged"] and div["test_error"] == pytest.approx(0.9)  # 1 - 1/10
    assert div["status"] == "diverged" and div["final_epoch"] == 2
    failed = table.loc[(0.5, 0.03)]  # normalized: lambda_norm is known
    assert failed["failed"] and failed["error_message"] == "boom"
    assert math.isnan(failed["test_error"])
    seeds = table.loc[(0.1, 0.01)]
    assert seeds["seeds"] == 3 and not seeds["diverged"]
    assert seeds["test_error"] == pytest.approx(0.12)
    assert seeds["test_error_std"] == pytest.approx(0.02)
    ranked = analysis.top_k(table.reset_index())
    assert len(ranked) == 2 and ranked["test_error"].iloc[0] == pytest.approx(0.12)


def test_corrupt_files_reported_and_skipped(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    good = write_cell(runs, 0.1, lr=0.1, lam=0.01)
    write_cell(runs, 0.2, lr=0.2, lam=0.01)
    (runs / "garbage.parquet").write_bytes(b"not a parquet file at all")
    data = (runs / f"{good}.parquet").read_bytes()
    (runs / "partial.parquet").write_bytes(data[: len(data) // 2])
    pd.DataFrame({"run_id": ["x"], "lr": [0.1]}).to_parquet(runs / "columns.parquet")
    runs_df, problems = analysis.load_runs(tmp_path)
    assert len(problems) == 3
    assert {p.split(":")[0] for p in problems} == {"garbage.parquet", "partial.parquet",
                                                   "columns.parquet"}
    assert "missing required columns" in [p for p in problems if p.startswith("col")][0]
    assert len(analysis.cells(runs_df)) == 2


def test_panels_vary_and_claims(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_surface(runs, -1.0, -13.4, c=-6, optimizer="sgd", decay="l2")
    write_surface(runs, 0.0, -6.3, c=-6, optimizer="sgd", decay="decoupled")
    alpha = 2.0**-10  # the grid alpha closest to 0.001
    write_cell(runs, 0.100, lr=alpha, lam=0.0, optimizer="adam", decay="none")
    for lam, l2_err, w_err in [(2.0**-8, 0.099, 0.090), (2.0**-6, 0.098, 0.070)]:
        write_cell(runs, l2_err, lr=alpha, lam=lam, optimizer="adam", decay="l2")
        write_cell(runs, w_err, lr=alpha, lam=lam, optimizer="adam", decay="decoupled")
    table = load_cells(tmp_path)
    assert analysis.panels(table) == ["sgd / l2", "sgd / decoupled", "adam / none", "adam / l2",
                                      "adam / decoupled"]
    verdicts = {c.name[0]: c for c in analysis.claims(table)}
    assert verdicts["1"].verdict == "supported", verdicts["1"].measured
    assert "SGD+L2 -1.00 ± 0.00 (n=6)" in verdicts["1"].measured
    assert verdicts["2"].verdict == "supported"
    assert "gain 2.0% rel." in verdicts["2"].measured and "gain 30.0% rel." in \
        verdicts["2"].measured
    assert verdicts["3"].verdict == "not supported"  # 7.0% vs 5.0%: 40% worse
    assert verdicts["4"].verdict == analysis.UNTESTABLE


@pytest.mark.parametrize("shift,verdict", [(0.0, "supported"), (3.0, "not supported")])
def test_budget_transfer_claim(tmp_path: Path, shift: float, verdict: str) -> None:
    for epochs, k0 in [(2, -5.0), (4, -5.0 + shift)]:
        for lam in LAMS:
            write_cell(tmp_path / "runs", planted(0.1, lam, 0.0, k0, math.log2(0.1)), lr=0.1,
                       lam=lam, epochs=epochs, normalized=True)
    table = load_cells(tmp_path)
    assert analysis.panels(table) == ["sgd / decoupled / 2 ep", "sgd / decoupled / 4 ep"]
    claim = analysis.claims(table)[3]
    assert claim.verdict == verdict, claim.measured
    assert "2^-5 @ 2 ep" in claim.measured
    assert np.isclose(table["weight_decay"].iloc[0], 2.0**-10 * math.sqrt(128 / 100000))


def test_missing_runs_dir_copy_is_independent(tmp_path: Path) -> None:
    write_cell(tmp_path / "a" / "runs", 0.1, lr=0.1, lam=0.01)
    shutil.copytree(tmp_path / "a" / "runs", tmp_path / "flat")
    runs, problems = analysis.load_runs(tmp_path / "flat")  # parquet files directly in the dir
    assert problems == [] and len(runs) == 3
    empty, problems = analysis.load_runs(tmp_path / "nothing")
    assert empty.empty and problems == []
    with pytest.raises(ValueError, match="no runs"):
        analysis.cells(empty)


def test_separability_is_undetermined_when_lambda_star_sits_on_the_grid_edge(tmp_path):
    write_surface(tmp_path / "runs", 0.0, -14.0, c=-6)  # lambda* far below the grid
    sep = analysis.separability(load_cells(tmp_path))
    assert sep.interior == 0 and not sep.determined
    interior = analysis.separability(load_cells(_fresh(tmp_path, -6.3)))
    assert interior.interior == 8 and interior.determined


def _fresh(tmp_path: Path, k0: float) -> Path:
    study = tmp_path / "interior"
    write_surface(study / "runs", 0.0, k0, c=-6)
    return study
