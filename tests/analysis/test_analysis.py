"""frames, stats, claims and units on planted studies written through `records.frame`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis import claims, curves, figures, frames, stats, units
from tests import planted

A8 = [2.0**k for k in range(-10, -2)]   # 8 alphas / lambdas
A5 = [2.0**k for k in range(-9, -4)]    # 5


def load(study: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs, problems = frames.load_runs(study)
    assert problems == []
    return frames.cells(runs), frames.finals(runs)


def in_memory(cell_frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = pd.concat(cell_frames, ignore_index=True)
    return frames.cells(runs), frames.finals(runs)


@pytest.mark.parametrize("s,k0,reading", [(-1.0, -13.4, "coupled"), (0.0, -6.3, "separable")])
def test_basin_slope_recovers_planted_slope_at_half_a_point_of_noise(tmp_path, s, k0, reading):
    planted.write_surface(tmp_path / "runs", A8, A8, s, k0, -6, noise=0.005)
    table, per_run = load(tmp_path)
    assert len(table) == 64 and (table["seeds"] == 1).all()
    slope = stats.basin_slope(table, per_run)
    assert slope.determined, slope
    assert abs(slope.estimate - s) < 0.2 and slope.low <= slope.estimate <= slope.high
    assert slope.high - slope.low < 0.3 and slope.n == 32
    assert slope.reading() == reading
    assert 0.003 < slope.resid_sd < 0.007  # the planted 0.5 points come back
    front = stats.frontier_slope(table, 0.02)
    assert front.determined and abs(front.estimate - s) < 0.2, front


def test_bias_toward_zero_is_gone():
    """The old estimator (OLS of per-column argmin lambda* on log2 alpha) read a planted
    coupled 5x5 basin as -0.70 +- 0.22 at 0.3 points of noise and -0.36 +- 0.31 at 1 point."""
    low_noise, high_noise = [], []
    for rng in range(4):
        low_noise.append(stats.basin_slope(*in_memory(planted.surface_frames(
            A5, A5, -1.0, -13.0, -7, noise=0.003, rng=rng))))
        high_noise.append(stats.basin_slope(*in_memory(planted.surface_frames(
            A5, A5, -1.0, -13.0, -7, noise=0.01, rng=rng))))
    estimates = [s.estimate for s in low_noise if s.determined]
    assert len(estimates) >= 3 and abs(np.mean(estimates) + 1) < 0.1, low_noise
    for s in high_noise:  # at 1 point: honest, either undetermined or covering the truth
        assert not s.determined or s.low <= -1 <= s.high, s
        assert s.text().startswith("undetermined") or s.estimate < -0.5
    assert any(not s.determined for s in high_noise)


@pytest.mark.parametrize("coupled", [True, False])
def test_damage_frontier_shows_coupling_where_decay_never_helps(coupled):
    dfs = []
    for a in A8:
        for m in A8:  # flat until the frontier, then quadratic damage: decay never helps
            x, y = math.log2(a), math.log2(m)
            edge = -14 - x if coupled else -7.0
            dfs.append(planted.cell_frame(0.1 + 0.02 * max(0.0, y - edge) ** 2, lr=a, lam=m))
    table, per_run = in_memory(dfs)
    front = stats.frontier_slope(table, 0.02)
    assert front.determined and abs(front.estimate - (-1 if coupled else 0)) < 0.1, front
    assert "first exceeds the column's best by 2.0 points" in front.method


def test_frontier_points_sit_on_the_planted_frontier_and_count_the_columns_above_the_grid():
    """Error 0.1 until log2 lambda = edge, then 0.02 (y - edge)^2: the 2-point margin is
    crossed at y = edge + 1, between grid rows (linear interpolation reads it within 0.5)."""
    dfs = []
    for a in A8:
        for m in A8:
            x, y = math.log2(a), math.log2(m)
            dfs.append(planted.cell_frame(0.1 + 0.02 * max(0.0, y - (-14 - x)) ** 2,
                                             lr=a, lam=m))
    table, _ = in_memory(dfs)
    points, above = stats.frontier_points(table, 0.02)
    xs = [x for x, _ in points]
    assert xs == [math.log2(a) for a in A8 if -14 - math.log2(a) + 1 < -3]  # inside the grid
    assert above == len(A8) - len(points) == 1  # alpha 2^-10: at the margin only in the top row
    for x, yf in points:
        assert abs(yf - (-14 - x + 1)) < 0.5, (x, yf)


def test_frontier_margin_uses_the_noise_near_each_columns_best():
    """Two seeds per cell: 0.2 points apart in the basin, 10 points apart where decay damages
    training (as in claim1_cpu). The margin is sized by the basin's noise, so it stays at 2
    points, and the coupled frontier is still found; the overall σ is reported beside it."""
    dfs = []
    for a in A8:
        for m in A8:
            x, y = math.log2(a), math.log2(m)
            damage = 0.02 * max(0.0, y - (-14 - x)) ** 2
            half = 0.05 if damage > 0.02 else 0.001
            dfs += [planted.cell_frame(0.1 + damage + sign * half, lr=a, lam=m, seed=seed)
                       for seed, sign in enumerate((-1, 1))]
    table, per_run = in_memory(dfs)
    overall, near = stats.noise(per_run), stats.noise(per_run, near=stats.MARGIN)
    assert overall.sigma > 0.03  # the runs at chance (6 cells here) are no seed noise
    assert overall.cells == (table["n_at_chance"] == 0).sum() == 58
    assert near.sigma == pytest.approx(math.sqrt(2) * 0.001) and near.cells < 64
    assert "within 2 pts of their α column's best" in near.text()
    fit = stats.panel_fits(table, per_run)
    assert fit.noise == near and fit.margin == stats.MARGIN
    assert fit.frontier.determined and abs(fit.frontier.estimate + 1) < 0.1, fit.frontier
    assert stats.frontier_margin(overall.sigma) > 0.09  # the overall σ would have hidden it


def test_a_seed_at_chance_is_counted_and_kept_out_of_the_noise_and_the_colour_scale():
    """A completed run that never left chance (as seed 1 at lr 0.5 in claims_cpu) is no seed
    noise: the cell counts it (`n_at_chance`), the noise leaves it out, and the heatmap draws
    the cell above its colour scale instead of stretching the scale to 50%."""
    dfs = [planted.cell_frame(e, lr=0.1, lam=lam, seed=i, val=e)
           for lam, errors in ((0.01, (0.110, 0.114)), (0.02, (0.105, 0.899)))
           for i, e in enumerate(errors)]
    table, per_run = in_memory(dfs)
    assert frames.at_chance(per_run).tolist() == [False, False, False, True]
    assert table.set_index("lam")["n_at_chance"].to_dict() == {0.01: 0, 0.02: 1}
    assert not table["diverged"].any()  # completed, finite: not a divergence
    noise = stats.noise(per_run)
    assert noise.dof == 1 and noise.sigma == pytest.approx(0.004 / math.sqrt(2), rel=1e-3)
    colours = figures.scale(table)
    assert colours.outliers == 1 and colours.norm.vmax < 15  # 50.2% is not on the scale


def test_decay_curves_draw_a_run_at_chance_as_a_cross_not_in_the_mean(tmp_path, monkeypatch):
    dfs = [planted.cell_frame(e, lr=0.1, lam=lam, seed=i, val=e)
           for lam, errors in ((0.01, (0.110, 0.114)), (0.02, (0.105, 0.899)))
           for i, e in enumerate(errors)]
    table, per_run = in_memory(dfs)
    drawn = []
    save = curves.save
    monkeypatch.setattr(curves, "save", lambda fig, *a: drawn.append(fig) or save(fig, *a))
    png = curves.plot_decay_curves(per_run, table, tmp_path)[0]
    caption = figures.caption_of(png)
    assert "A cross on the top edge: one of 1 runs that did not train" in caption
    [ax] = [a for a in drawn[0].axes if a.get_title()]
    means = [y for line in ax.get_lines() for y in line.get_ydata()]
    assert max(means) < 12 and ax.get_ylim()[1] < 20  # the 10.5% seed alone, not 50.2%


def test_optimum_off_the_grid_is_undetermined_and_prints_no_slope():
    table, per_run = in_memory(planted.surface_frames(A8, A8, 0.0, -14.0, -6))
    slope = stats.basin_slope(table, per_run)
    assert not slope.determined and "outside the λ grid" in slope.reason
    assert slope.text().startswith("undetermined (") and "±" not in slope.text()
    few = stats.basin_slope(*in_memory(planted.surface_frames(A8[:3], A8[:3], 0.0, -6, -6)))
    assert not few.determined and "quadratic surface needs 10" in few.reason


def test_noise_and_paired_difference():
    dfs = [planted.cell_frame(e, lr=0.1, lam=0.01, seed=i) for i, e in
              enumerate([0.10, 0.12, 0.14])]
    dfs += [planted.cell_frame(e, lr=0.1, lam=0.02, seed=i) for i, e in
               enumerate([0.09, 0.10, 0.13])]
    table, per_run = in_memory(dfs)
    noise = stats.noise(per_run)
    pooled = math.sqrt((0.0008 + ((np.array([0.09, 0.10, 0.13]) - 0.10666) ** 2).sum()) / 4)
    assert noise.dof == 4 and noise.sigma == pytest.approx(pooled, rel=1e-3)
    a, b = (per_run[per_run["lam"] == lam] for lam in (0.01, 0.02))
    d = stats.difference(a, b)
    assert d.paired and d.n == 3
    assert d.mean == pytest.approx(0.04 / 3) and d.se == pytest.approx(0.01 / 3)
    # 4 SE at n = 3 is not resolved: the 95% t interval has t(0.975, 2 dof) = 4.30
    assert d.half == pytest.approx(4.302652729911275 * 0.01 / 3)
    assert not d.resolved
    assert d.text() == "+1.33 ± 0.33 SE, 95% ± 1.43 pts (paired seeds, n=3)"
    b_far = b.assign(test_error=b["test_error"] - 0.01)  # the same spread, 1 point further
    assert stats.difference(a, b_far).resolved  # 2.33 > 1.43
    assert not stats.difference(a.head(1), b.head(1)).resolved  # one seed: SE unknown
    assert stats.t975(30) == pytest.approx(2.0423, abs=1e-4) and math.isnan(stats.t975(0))


def adam_study(e0: float, l2: list[float], w: list[float], seeds: int = 3,
               jitter: float = 0.001) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Adam at alpha 2^-10: lambda = 0, and L2 / AdamW at 3 lambdas (middle one best)."""
    alpha, dfs = 2.0**-10, []
    offsets = [jitter * (s - 1) for s in range(seeds)]  # shared per seed: pairing removes it
    for s, off in enumerate(offsets):
        dfs.append(planted.cell_frame(e0 + off, lr=alpha, lam=0.0, optimizer="adam",
                                         decay="none", seed=s))
        for decay, errs in (("l2", l2), ("decoupled", w)):
            for lam, e in zip([2.0**-6, 2.0**-4, 2.0**-2], errs, strict=True):
                dfs.append(planted.cell_frame(e + off + 0.0003 * ((s * 7 + len(dfs)) % 3),
                                                 lr=alpha, lam=lam, optimizer="adam",
                                                 decay=decay, seed=s))
    return in_memory(dfs)


@pytest.mark.parametrize("l2,w,verdict", [
    ([0.142, 0.140, 0.143], [0.140, 0.125, 0.135], claims.SUPPORTED),
    ([0.140, 0.1368, 0.139], [0.139, 0.1370, 0.138], claims.CONTRADICTED),  # the pilot
    ([0.1432, 0.1431, 0.1433], [0.1433, 0.1431, 0.1432], claims.UNTESTABLE),  # noise > effect
    ([0.130, 0.135, 0.140], [0.140, 0.125, 0.135], claims.UNTESTABLE),  # L2 best on the edge
])
def test_claim2_verdicts_from_paired_seed_means(l2, w, verdict):
    table, per_run = adam_study(0.1432, l2, w)
    claim = claims.claims(table, per_run)[1]
    assert claim.verdict == verdict, claim.measured
    assert "pts (paired seeds, n=3)" in claim.measured
    assert "chosen and scored on the same test set" in claim.measured


def test_claim2_with_one_seed_is_not_testable():
    table, per_run = adam_study(0.1432, [0.142, 0.140, 0.143], [0.140, 0.125, 0.135], seeds=1)
    claim = claims.claims(table, per_run)[1]
    assert claim.verdict == claims.UNTESTABLE and "(SE unknown)" in claim.measured


def test_lambda_chosen_on_validation_and_scored_on_test():
    dfs = [planted.cell_frame(0.10, val=0.20, lr=0.1, lam=0.01),   # best on test
              planted.cell_frame(0.11, val=0.15, lr=0.1, lam=0.02)]   # best on validation
    table, _ = in_memory(dfs)
    assert frames.selection_metric(table) == "val_error"
    best = frames.best_cells(table).iloc[0]
    assert best["lam"] == 0.02 and best["test_error"] == pytest.approx(0.11)
    table_test, _ = in_memory([f.drop(columns="val_error") for f in dfs])
    assert frames.selection_metric(table_test) == "test_error"
    assert frames.best_cells(table_test).iloc[0]["lam"] == 0.01


def test_claim1_supported_on_planted_coupled_and_separable_panels():
    dfs = planted.surface_frames(A8, A8, -1.0, -13.4, -6, noise=0.003, seeds=2,
                                    optimizer="sgd", decay="l2")
    dfs += planted.surface_frames(A8, A8, 0.0, -6.3, -6, noise=0.003, seeds=2, rng=1,
                                     optimizer="sgd", decay="decoupled")
    table, per_run = in_memory(dfs)
    claim = claims.claims(table, per_run)[0]
    assert claim.verdict == claims.SUPPORTED, claim.measured
    assert "basin ridge slope SGD+L2 -1.0" in claim.measured and "verdict from the basin" in \
        claim.measured
    rivals = claims.claims(table, per_run)[2]
    assert rivals.verdict == claims.UNTESTABLE and rivals.measured.startswith("needs")


def test_paper_and_torch_units():
    assert units.convert(0.5, 2.0**-10, "decoupled_lr", "paper") == 2.0**-11
    assert units.convert(2.0**-11, 2.0**-10, "decoupled", "torch") == 0.5
    assert units.convert(0.5, 0.1, "decoupled", "paper") == 0.5
    with pytest.raises(ValueError, match="no paper/torch coordinates"):
        units.convert(0.5, 0.1, "l2", "paper")
    # tau_epoch = b / (B * alpha * lambda_torch) = 64 / (5000 * 2^-10 * 2^3) = 1.6384 epochs
    dfs = [planted.cell_frame(0.1, lr=2.0**-10, lam=8.0, optimizer="adam",
                                 decay="decoupled_lr"),
              planted.cell_frame(0.1, lr=2.0**-10, lam=2.0**-7, optimizer="adam",
                                 decay="decoupled"),
              planted.cell_frame(0.1, lr=2.0**-10, lam=2.0**-7, optimizer="adam", decay="l2")]
    table, _ = in_memory(dfs)
    tau = dict(zip(table["decay"], units.tau_epochs(table), strict=True))
    assert tau["decoupled_lr"] == pytest.approx(1.6384) and tau["decoupled"] == \
        pytest.approx(1.6384) and math.isnan(tau["l2"])
    both = units.overlap(table[table["decay"] == "decoupled"],
                         table[table["decay"] == "decoupled_lr"])
    assert len(both) == 1 and both["lam_paper"].iloc[0] == 2.0**-7


def test_diverged_failed_and_seeds(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    planted.write(runs, planted.cell_frame(0.2, lr=0.5, lam=0.01, status="diverged"))
    planted.write(runs, planted.cell_frame(0.2, lr=0.5, lam=0.02, status="failed",
                                           num_classes=None))
    for seed, err in enumerate([0.10, 0.12, 0.14]):
        planted.write(runs, planted.cell_frame(err, lr=0.1, lam=0.01, seed=seed))
    planted.write(runs, planted.cell_frame(0.2, lr=0.5, lam=0.04, status="failed",
                                           num_classes=0))  # today's main: ZeroDivisionError
    table, _ = load(tmp_path)
    assert table.set_index(["lr", "lam"]).loc[(0.5, 0.04), "failed"]
    table = table.set_index(["lr", "lam"])
    div = table.loc[(0.5, 0.01)]
    assert div["diverged"] and div["test_error"] == pytest.approx(0.9)  # 1 - 1/10
    assert div["status"] == "diverged" and div["final_epoch"] == 2
    failed = table.loc[(0.5, 0.02)]
    assert failed["failed"] and failed["error_message"] == "CUDA out of memory"
    assert math.isnan(failed["test_error"]) and math.isnan(failed["chance"])
    seeds = table.loc[(0.1, 0.01)]
    assert seeds["seeds"] == 3 and seeds["test_error"] == pytest.approx(0.12)
    assert seeds["test_error_std"] == pytest.approx(0.02)
    assert len(frames.top_k(table.reset_index())) == 2


def test_bad_files_and_values_are_skipped_with_one_line_each(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    good = planted.write(runs, planted.cell_frame(0.1, lr=0.1, lam=0.01))
    base = planted.cell_frame(0.2, lr=0.2, lam=0.01)
    bad = {"epoch": base.assign(epoch=base["epoch"].astype(str).replace("2", "two")),
           "optimizer": base.assign(optimizer="lion"),
           "nulls": base.assign(lr=None),
           "classes0": base.assign(num_classes=0),
           "classesnull": base.assign(num_classes=None),
           "normalized": base.assign(normalized="maybe")}
    for name, df in bad.items():
        df.to_parquet(runs / f"{name}.parquet")
    (runs / "garbage.parquet").write_bytes(b"not a parquet file at all")
    data = (runs / f"{good}.parquet").read_bytes()
    (runs / "partial.parquet").write_bytes(data[: len(data) // 2])
    pd.DataFrame({"run_id": ["x"], "lr": [0.1]}).to_parquet(runs / "columns.parquet")
    runs_df, problems = frames.load_runs(tmp_path)
    why = {p.split(":")[0]: p for p in problems}
    assert len(problems) == 9 and all(p.endswith(", skipped") for p in problems)
    assert "epoch has a non-numeric value 'two'" in why["epoch.parquet"]
    assert "unknown optimizer 'lion' (valid: adam, rmsprop, sgd)" in why["optimizer.parquet"]
    assert "null values in ['lr']" in why["nulls.parquet"]
    assert "chance level unknown" in why["classes0.parquet"] + why["classesnull.parquet"]
    assert "missing required columns" in why["columns.parquet"]
    assert "normalized must be true or false" in why["normalized.parquet"]
    assert "unreadable parquet" in why["garbage.parquet"]
    assert len(frames.cells(runs_df)) == 1


def test_edge_warning_and_top10(tmp_path: Path) -> None:
    table, _ = in_memory(planted.surface_frames(A8, A8, 0.0, -9.8, -10))
    warnings = frames.edge_warnings(table)
    assert len(warnings) == 2 and "smallest lr" in warnings[0] and "smallest lambda" in \
        warnings[1]
    table, _ = in_memory(planted.surface_frames(A8, A8, -1.0, -13.4, -6))
    truth = sorted((planted.surface(a, m, -1.0, -13.4, -6), a, m) for a in A8 for m in A8)[:10]
    top = frames.top_k(table, 10)
    assert set(zip(top["lr"], top["lam"], strict=True)) == {(a, m) for _, a, m in truth}
    assert frames.edge_warnings(table) == []


@pytest.mark.parametrize("budgets,slope,seeds,verdict", [
    ((2, 8, 32), 0.0, 2, claims.SUPPORTED),
    ((2, 8, 32), 0.5, 2, claims.NOT_SUPPORTED),
    ((2, 8, 32), -0.5, 2, claims.NOT_SUPPORTED),
    # raw-lambda transfer over a 4x budget range moves the best lambda_norm by one grid octave,
    # which the former criterion ("spread <= 1 octave") called supported (issue 26)
    ((2, 8), 0.5, 2, claims.NOT_SUPPORTED),
    ((2, 8, 32), 0.0, 1, claims.UNTESTABLE),  # one seed: the optimum's noise is unknown
])
def test_budget_transfer_claim(budgets, slope, seeds, verdict) -> None:
    """The best lambda_norm planted at 2^(-5 + slope * log2(T / 8)) on a 1-octave grid, 0.2
    points of noise per run: the slope's interval decides, as the registered claim 4 does."""
    lams = [2.0**k for k in range(-10, 1)]
    gen = np.random.default_rng(7)
    dfs = [planted.cell_frame(planted.surface(0.1, lam, 0.0, -5.0 + slope * math.log2(t / 8),
                                              math.log2(0.1)) + 0.002 * gen.standard_normal(),
                              lr=0.1, lam=lam, epochs=t, normalized=True, seed=seed)
           for t in budgets for lam in lams for seed in range(seeds)]
    table, per_run = in_memory(dfs)
    assert frames.panels(table) == [f"sgd / decoupled / {t} ep" for t in budgets]
    claim = claims.claims(table, per_run)[3]
    assert claim.verdict == verdict, claim.measured
    assert "best log2 lambda_norm on log2 epochs: slope" in claim.measured


@pytest.mark.slow
@pytest.mark.parametrize("s,k0", [(-1.0, -13.4), (0.0, -6.3)])
def test_basin_slope_power_on_one_seed_8x8_studies(s, k0):
    """Issue 26's estimator power: planted one-seed 8 x 8 studies with the optimum inside the
    grid. At 1 point of noise the slope is given and within 0.25 of the truth in at least 19
    of 20 replicates; at 2 points it may say undetermined, but never gives a wrong number
    (more than 0.25 off) with an interval that excludes the truth."""
    at_1 = [stats.basin_slope(*in_memory(planted.surface_frames(
        A8, A8, s, k0, -6, noise=0.01, rng=rng))) for rng in range(20)]
    assert sum(r.determined and abs(r.estimate - s) <= 0.25 for r in at_1) >= 19, at_1
    for rng in range(10):
        r = stats.basin_slope(*in_memory(planted.surface_frames(
            A8, A8, s, k0, -6, noise=0.02, rng=100 + rng)))
        assert not r.determined or abs(r.estimate - s) <= 0.25 or r.low <= s <= r.high, r
