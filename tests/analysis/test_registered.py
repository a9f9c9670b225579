"""The pre-registered statistics of the four-claim study (harness.analysis.registered)."""

import math
import re

import numpy as np
import pandas as pd
import pytest

from harness.analysis import registered as reg


@pytest.fixture(autouse=True)
def fewer_replicates(monkeypatch):
    """400 bootstrap replicates instead of the registered 2000: the tests repeat the statistic
    dozens of times; the intervals they check are far from their bounds."""
    monkeypatch.setattr(reg, "REPLICATES", 400)


def test_locate_finds_a_parabola_vertex_between_grid_points_and_flags_edges():
    y = np.arange(-6.0, -1.0)                      # -6 .. -2
    assert reg.locate(y, (y + 3.6) ** 2) == (pytest.approx(-3.6), True)
    assert reg.locate(y, 0.1 + 0.01 * (y + 2.2) ** 2) == (pytest.approx(-2.2), False)
    # not convex around the argmin: the argmin itself
    assert reg.locate(y, np.array([0.1, 0.5, 0.0, 0.5, 0.1])) == (-4.0, True)
    # the vertex stays inside the fitted points
    assert -6.0 <= reg.locate(y, np.array([1.0, 2.0, 3.0, 4.0, 5.0]))[0] <= -4.0


def _planted(slope: float, sigma: float, rng: np.random.Generator, seeds: int = 2,
             half_octaves: bool = False) -> pd.DataFrame:
    """Runs of a basin whose optimum moves `slope` octaves per unit of x, noise sigma."""
    rows = []
    step = 0.5 if half_octaves else 1.0
    for x in (-5.0, -3.0, -1.0):
        centre = -3.0 + slope * (x + 3.0)
        for y in np.arange(math.floor(centre) - 2, math.floor(centre) + 3, step):
            for s in range(seeds):
                z = 0.12 + 0.01 * (y - centre) ** 2 + rng.normal(0, sigma)
                rows.append({"x": x, "y": float(y), "seed": s, "z": z})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("truth, reading", [(-1.0, "coupled"), (0.0, "separable")])
def test_the_optimum_slope_recovers_the_planted_truth_with_an_honest_interval(truth, reading):
    rng = np.random.default_rng(1)
    hits, sigmas = 0, []
    for _ in range(10):
        s = reg.optimum_slope(_planted(truth, 0.002, rng), seed=int(rng.integers(1 << 30)))
        assert s.testable and s.dof == 15
        sigmas.append(s.sigma)
        assert abs(s.estimate - truth) < 0.25
        hits += s.low <= truth <= s.high
        assert reg.coupling_reading(s) == reading
    assert hits == 10 and np.mean(sigmas) == pytest.approx(0.002, rel=0.15)


def test_noise_larger_than_the_basin_gives_no_verdict_and_an_edge_gives_not_testable():
    rng = np.random.default_rng(2)
    for _ in range(10):  # noise of 5 points against a basin 1 point deep: never a wrong verdict
        noisy = reg.optimum_slope(_planted(-1.0, 0.05, rng), seed=int(rng.integers(1 << 30)))
        assert reg.coupling_reading(noisy) in ("not decided", "not testable here", "coupled")
        assert noisy.high - noisy.low > 0.5
    assert reg.coupling_reading(reg.OptimumSlope(-0.6, -1.2, 0.1, ((0, 0), (1, 0)), (), 0.01,
                                                 5)) == "not decided"
    runs = _planted(0.0, 0.001, rng)
    edge = reg.optimum_slope(runs[runs.y <= -3.0])   # every column's argmin on its upper edge
    assert edge.unbracketed == (-5.0, -3.0, -1.0) and reg.coupling_reading(edge) == \
        "not testable here"
    one_seed = reg.optimum_slope(_planted(0.0, 0.001, rng, seeds=1))
    assert one_seed.dof == 0 and math.isnan(one_seed.low)
    assert reg.coupling_reading(one_seed) == "not testable here"


def test_transfer_reading_names_the_one_prediction_inside_the_interval():
    rng = np.random.default_rng(3)
    runs = _planted(0.5, 0.001, rng, half_octaves=True)
    s = reg.optimum_slope(runs)
    assert s.low <= 0.5 <= s.high and s.high - s.low < 0.5
    assert reg.transfer_reading(s) == "+0.5 (raw lambda transfers: a fixed EMA timescale in epochs)"
    wide = reg.OptimumSlope(0.2, -0.3, 0.7, ((0, 0), (1, 0)), (), 0.01, 5)
    assert reg.transfer_reading(wide) == "not decided"


def test_slope_text_names_budgets_by_their_value_and_alphas_as_powers_of_two():
    budgets = reg.OptimumSlope(0.59, 0.31, 0.95, tuple((math.log2(t), -3.0) for t in (4, 12, 36)),
                               (math.log2(36),), 0.0035, 21)
    text = reg.slope_text(budgets, "T")
    assert "2^-3.00 at T 4, 2^-3.00 at T 12, 2^-3.00 at T 36;" in text
    assert text.endswith("argmin on the grid edge at T 36)")
    alphas = reg.OptimumSlope(-1.0, -1.3, -0.7, ((-5.0, -2.0), (-3.0, -4.0)), (), 0.0033, 30)
    assert "(optima 2^-2.00 at alpha 2^-5, 2^-4.00 at alpha 2^-3; single-run sd 0.33 points, " \
        "30 dof)" in reg.slope_text(alphas, "alpha")


def test_paired_t_intervals_equivalence_and_non_inferiority():
    a = pd.Series([0.14, 0.15, 0.13, 0.16, 0.14])
    b = pd.Series([0.12, 0.125, 0.11, 0.13, 0.125])
    p = reg.paired(a, b)
    d = (a - b).to_numpy()
    assert (p.mean, p.n) == (pytest.approx(d.mean()), 5)
    half = 2.7764451051977987 * d.std(ddof=1) / math.sqrt(5)   # t(0.975, 4 df)
    assert p.interval() == (pytest.approx(d.mean() - half), pytest.approx(d.mean() + half))
    half90 = 2.1318467863266495 * d.std(ddof=1) / math.sqrt(5)  # t(0.95, 4 df)
    assert p.interval(0.90)[1] == pytest.approx(d.mean() + half90)
    assert p.above(0.0) and not p.equivalent(0.01) and p.equivalent(0.05)
    assert p.below(0.03) and not p.below(0.02)
    missing = reg.paired(a, pd.Series([0.1], index=[2]))
    assert missing.n == 1 and math.isnan(missing.interval()[0]) and not missing.equivalent(1)


def _run(optimizer, decay, lr, lam, seed, val, test=None, epochs=12):
    return {"optimizer": optimizer, "decay": decay, "lr": lr, "lam": lam, "epochs": epochs,
            "seed": seed, "val_error": val, "test_error": val if test is None else test,
            "failed": False, "chance": 0.9}


def test_the_pilot_rule_is_one_point_of_seed_mean_validation_error():
    rows = [_run("sgd", "none", 0.125, 0.0, s, v) for s, v in ((0, 0.130), (1, 0.134))]
    rows += [_run("sgd", "decoupled", 0.125, 0.125, s, v) for s, v in ((0, 0.121), (1, 0.122))]
    rows += [_run("sgd", "l2", 0.125, 0.125, s, v) for s, v in ((0, 0.125), (1, 0.127))]
    rows += [_run("sgd", decay, 0.125, lam, s, 0.13) for decay in ("l2", "decoupled")
             for lam in (0.03125, 0.5) for s in (0, 1)]  # the registered 14 runs
    [v] = reg.pilot(pd.DataFrame(rows))
    assert v.verdict == "go on" and "gain +1.05 points" in v.measured
    [partial] = reg.pilot(pd.DataFrame(rows[:6]))
    assert partial.verdict == "incomplete (6 of 14 registered runs)"
    assert partial.measured.startswith("so far: ")
    assert v.claim == "pilot, 12 epochs"
    longer = [dict(r, epochs=24) for r in rows]
    rows[2]["val_error"] = rows[3]["val_error"] = 0.124
    short, long = reg.pilot(pd.DataFrame(rows + longer))
    assert short.verdict == "raise the budget" and "gain +0.80 points" in short.measured
    assert (long.claim, long.verdict) == ("pilot, 24 epochs", "go on")


def _claim1_runs(l2_slope: float, w_slope: float, rng) -> pd.DataFrame:
    rows = []
    for decay, slope in (("l2", l2_slope), ("decoupled", w_slope)):
        runs = _planted(slope, 0.002, rng)
        rows += [_run("sgd", decay, 2.0 ** r.x, 2.0 ** r.y, r.seed, r.z)
                 for r in runs.itertuples()]
    return pd.DataFrame(rows)


def test_claim1_is_supported_by_a_coupled_l2_and_a_separable_sgdw_and_contradicted_swapped():
    rng = np.random.default_rng(4)
    v = reg.claim1(_claim1_runs(-1.0, 0.0, rng))
    assert v.verdict == "supported", v.measured
    assert "SGD+L2: slope -1.0" in v.measured and "reads coupled" in v.measured
    # the second reading: each column's error passes its best + 2 points at c + sqrt(2)
    assert re.search(r"reads coupled; damage frontier \(validation error \+2 points\) "
                     r"-(0\.9\d|1\.0\d) \[", v.measured), v.measured
    assert re.search(r"reads separable; damage frontier \(validation error \+2 points\) "
                     r"[+-]0\.0\d \[", v.measured), v.measured
    assert reg.claim1(_claim1_runs(0.0, -1.0, rng)).verdict == "contradicted"
    runs = _claim1_runs(-1.0, 0.0, rng)
    partial = reg.claim1(runs[~((runs.decay == "l2") & (runs.seed == 1))])
    assert partial.verdict == "SGD+L2 incomplete (15 of 30 registered runs)", partial
    l2_only = reg.claim1(runs[runs.decay == "l2"])  # SGDW not started: incomplete, not untestable
    assert l2_only.verdict == "SGDW incomplete (0 of 30 registered runs)", l2_only
    assert "SGDW: no finished run yet" in l2_only.measured
    assert reg.claim1(_claim1_runs(-1.0, -0.5, rng)).verdict in ("not decided", "contradicted")
    column = (runs.decay == "l2") & (runs.lr == 2.0 ** -5)  # optimum 2^-1, grid 2^-3 .. 2^1
    moved = pd.DataFrame([_run("sgd", "l2", 2.0 ** -5, 2.0 ** y, s, 0.2) for y in (-5, -4)
                          for s in (0, 1)])                   # 2^-5 .. 2^-1: 30 runs still
    edge = pd.concat([runs[~(column & (runs.lam > 0.5))], moved])
    assert reg.extensions(edge) == [("l2", 2.0 ** -5, 1.0)]
    assert reg.claim1(edge).verdict == "SGD+L2 incomplete (edge extension pending at alpha 2^-5)"


def _adam_runs(seeds: int, w_gain: float, l2_gain: float, rng) -> pd.DataFrame:
    rows = []
    for s in range(seeds):
        shared = rng.normal(0, 0.004)       # a seed's luck, shared by its cells (paired)
        def err(gain, s=s, shared=shared):  # noqa: E306
            return 0.14 - gain + shared + rng.normal(0, 0.001)
        rows += [_run("adam", "none", 2.0 ** -9, 0.0, s, err(0)),
                 _run("adam", "decoupled", 2.0 ** -9, 0.125, s, err(w_gain)),
                 _run("adam", "decoupled", 2.0 ** -9, 0.5, s, err(w_gain - 0.02)),
                 _run("adam", "l2", 2.0 ** -9, 0.125, s, err(l2_gain)),
                 _run("sgd", "decoupled", 0.125, 0.125, s, err(w_gain + 0.001))]
    return pd.DataFrame(rows)


def test_claims_2_and_3_pair_the_chosen_cells_over_five_seeds():
    rng = np.random.default_rng(5)
    two, three = reg.claims23(_adam_runs(5, 0.02, 0.0, rng))
    assert (two.verdict, three.verdict) == ("supported", "supported"), (two, three)
    assert "AdamW gain over lambda = 0 +2.0" in two.measured and "lambda_norm 0.125" in \
        two.measured
    two, _ = reg.claims23(_adam_runs(5, 0.02, 0.02, rng))  # L2 gains as much: not equivalent
    assert two.verdict == "contradicted", two
    two, three = reg.claims23(_adam_runs(3, 0.02, 0.0, rng))
    assert two.verdict == three.verdict == "incomplete" and "fewer than 5" in two.measured
    _, three = reg.claims23(_adam_runs(5, 0.0, 0.0, rng).assign(
        test_error=lambda d: np.where(d.optimizer == "sgd", d.test_error - 0.04,
                                      d.test_error)))
    assert three.verdict == "contradicted", three  # AdamW 4 points (29%) behind SGDW


def test_claim4_reads_the_budget_slope_against_its_three_predictions():
    rng = np.random.default_rng(6)
    for truth, verdict in ((0.0, "supported"), (0.5, "contradicted")):
        runs = _planted(truth, 0.001, rng, half_octaves=True)  # x as log2 T here
        per_run = pd.DataFrame([_run("adam", "decoupled", 2.0 ** -9, 2.0 ** r.y, r.seed, r.z,
                                     epochs=2.0 ** r.x) for r in runs.itertuples()])
        v = reg.claim4(per_run)
        assert v.verdict == verdict, v.measured
    first = per_run[per_run["epochs"] == per_run["epochs"].min()].head(4)  # a study begun
    assert reg.claim4(first).verdict == "incomplete (4 of 42 registered runs)"


def test_amendment_a1_leaves_out_runs_at_chance_beside_the_registered_verdict():
    """A seed at chance in one column (as seed 1 at alpha 2^-1 in claims_cpu) makes the
    registered noise huge; A1 leaves such runs out of the statistic, not out of the counts."""
    rng = np.random.default_rng(7)
    runs = _claim1_runs(-1.0, 0.0, rng)
    top = runs["lr"] == runs["lr"].max()
    runs.loc[top & (runs["seed"] == 1), "val_error"] = 0.9015  # at chance, status completed
    registered_, amended = reg.claim1(runs), reg.claim1(runs, amended=True)
    assert registered_.verdict != "supported", registered_.measured
    assert re.search(r"single-run sd [1-9]\d\.\d\d points", registered_.measured)  # tens
    assert amended.verdict == "supported", amended.measured
    assert reg.untrained(runs).sum() == 10 and reg.untrained(runs[~top]).sum() == 0
    partial = runs[~((runs["decay"] == "l2") & top & (runs["seed"] == 0))]
    assert reg.claim1(partial, amended=True).verdict == "SGD+L2 incomplete (25 of 30 " \
        "registered runs)"  # a run that did not train still counts as run
    [v] = [v for v in reg.verdicts("claims_cpu", runs, amended=True) if v.claim.startswith("1")]
    assert (v.claim, v.verdict) == ("1, amended A1", "supported")
    text = reg.untrained_text(runs)
    assert "sgd/l2 alpha 2^-1, 12 epochs, seed 1: 5 run(s), validation error 90.1%" in text
    assert reg.untrained_text(runs[~top]) == ""


def test_claim1_extends_a_complete_column_whose_argmin_is_on_its_edge():
    """One octave beyond the edge, both seeds finished first, at most EXTENSIONS times."""
    def column(lams, best):
        return [_run("sgd", "l2", 0.5, 2.0 ** y, s, 0.10 + 0.01 * abs(y - best))
                for y in lams for s in (0, 1)]
    grid = list(range(-8, -3))                                 # -8 .. -4, registered
    assert reg.extensions(pd.DataFrame(column(grid, -6))) == []  # bracketed
    assert reg.extensions(pd.DataFrame(column(grid, -2))) == [("l2", 0.5, 2.0 ** -3)]
    assert reg.extensions(pd.DataFrame(column(grid, -12))) == [("l2", 0.5, 2.0 ** -9)]
    assert reg.extensions(pd.DataFrame(column(grid, -2)[:-1])) == []  # seed 1 not finished
    extended = list(range(-8, 0))                              # three extensions done
    assert reg.extensions(pd.DataFrame(column(extended, 3))) == []
    assert reg.extensions(pd.DataFrame(column(extended[:-1], 3))) == [("l2", 0.5, 0.5)]


def test_claims_2_and_3_extend_an_edge_lambda_and_report_an_edge_alpha():
    """The common edge rule on each decayed Adam panel's lambdas (seed 0, one grid step, at most
    three times); an alpha on the grid's edge is reported beside the verdict, not extended."""
    def grid(decay, lams, best_lr, best_lam):
        return [_run("adam", decay, 2.0 ** a, 2.0 ** y, 0,
                     0.12 + 0.01 * abs(a - best_lr) + 0.01 * abs(y - best_lam))
                for a in (-11, -9, -7) for y in lams]
    w, l2 = list(range(-6, -1)), [-5, -3, -1, 1]
    inside = pd.DataFrame(grid("decoupled", w, -9, -4) + grid("l2", l2, -9, -3))
    assert reg.extensions23(inside) == []
    edge = pd.DataFrame(grid("decoupled", w, -9, -1) + grid("l2", l2, -9, 3))
    assert reg.extensions23(edge) == [("decoupled", 2.0 ** -9, 2.0 ** -1),
                                      ("l2", 2.0 ** -9, 2.0 ** 3)]  # L2's step: 2 octaves
    two, three = reg.claims23(edge)
    assert two.verdict == three.verdict == "incomplete (edge extension pending)", two
    assert "beyond it: adam/decoupled alpha 2^-9, lambda_norm 2^-1" in two.measured
    done = pd.DataFrame(grid("decoupled", range(-6, 2), -9, 5) + grid("l2", l2, -9, -3))
    assert reg.extensions23(done) == []  # three extensions: not bracketed, not testable
    assert reg.claims23(done)[0].verdict == "not testable here"
    assert reg.extensions23(edge.iloc[1:]) == [("l2", 2.0 ** -9, 2.0 ** 3)]  # grid unfinished
    at_edge = pd.DataFrame(grid("decoupled", w, -7, -4))
    assert reg.alpha_edges(at_edge) == "adam/decoupled at 2^-7"


def _study23(best_none: int, seeds5=None, rng=None) -> pd.DataFrame:
    """Claims 2-3's seed-0 grid (Adam alphas 2^-11, 2^-9, 2^-7; AdamW lambdas 2^-6 .. 2^-2,
    Adam+L2 2^-5 .. 2^1) with Adam lambda = 0 best at alpha 2^best_none, SGDW's cell from
    claim 1 (seeds 0, 1), and `seeds5`: {(decay, log2 alpha, log2 lambda): [test errors]} to
    bring chosen cells to 5 seeds."""
    rows = [_run("adam", "none", 2.0 ** a, 0.0, 0, 0.13 + 0.01 * abs(a - best_none))
            for a in (-11, -9, -7, -5, -3, -1) if a <= max(best_none, -7)]
    rows += [_run("adam", "decoupled", 2.0 ** a, 2.0 ** y, 0, 0.11 + 0.01 * abs(a + 9)
                  + 0.01 * abs(y + 4)) for a in (-11, -9, -7) for y in range(-6, -1)]
    rows += [_run("adam", "l2", 2.0 ** a, 2.0 ** y, 0, 0.13 + 0.01 * abs(a + 9)
                  + 0.01 * abs(y + 3)) for a in (-11, -9, -7) for y in (-5, -3, -1, 1)]
    rows += [_run("sgd", "decoupled", 2.0 ** -5, 0.25, s, 0.11) for s in (0, 1)]
    for (decay, a, y), errors in (seeds5 or {}).items():
        opt = "sgd" if decay == "sgdw" else "adam"
        rows += [_run(opt, "decoupled" if decay == "sgdw" else decay, 2.0 ** a,
                      0.0 if y is None else 2.0 ** y, s, e) for s, e in enumerate(errors)
                 if (s, e) != (0, None)]
    return pd.DataFrame(rows)


def test_a_chosen_cell_stays_chosen_when_its_later_seeds_do_worse():
    """Cells are chosen on their choosing seeds (Adam: seed 0; SGDW: seeds 0 and 1): seeds 1-4
    of AdamW's cell average far above the next-best cell's seed 0, and the choice stays."""
    worse = [None, 0.15, 0.15, 0.15, 0.15]
    runs = _study23(-7, {("decoupled", -9, -4): worse})
    assert reg.choose(runs, "adam", "decoupled") == (2.0 ** -9, 2.0 ** -4)
    full = {("none", -7, None): [None] + [0.13] * 4, ("decoupled", -9, -4): worse,
            ("l2", -9, -3): [None] + [0.13] * 4, ("sgdw", -5, -2): [None, None, 0.11, 0.11,
                                                                     0.11]}
    two, three = reg.claims23(_study23(-7, full))
    assert "fewer than" not in two.measured and two.verdict != "incomplete", two


def test_amendment_a2_widens_an_edge_alpha_and_leaves_the_registered_reading_alone():
    """A2: Adam lambda = 0 chosen at the largest alpha gains a column 4x beyond it (seed 0),
    then another while it stays on the edge, at most three; the registered verdict never
    reads the runs at those alphas."""
    runs = _study23(-7)   # lambda = 0 best at the registered edge 2^-7
    assert reg.alpha_extensions(runs) == [("none", 2.0 ** -5, 0.0)]
    wider = _study23(-3)  # its optimum lies two steps beyond: 2^-5 and 2^-3 at seed 0 so far
    assert reg.alpha_extensions(wider) == [("none", 2.0 ** -1, 0.0)]
    assert reg.claims23(wider, amended=True, a2=True)[0].verdict == \
        "incomplete (A2 extension pending)"
    bracketed = _study23(-3).pipe(lambda d: pd.concat(
        [d, pd.DataFrame([_run("adam", "none", 2.0 ** -1, 0.0, 0, 0.15)])]))
    assert reg.alpha_extensions(bracketed) == []
    three = _study23(-1)  # 2^-5, 2^-3, 2^-1 done and still on the edge: not bracketed
    assert reg.alpha_extensions(three) == []
    assert reg.claims23(three, amended=True, a2=True)[0].verdict == "not testable here"
    # the registered reading ignores A2's columns: its choice stays at 2^-7
    full = {("none", -7, None): [None] + [0.13] * 4, ("decoupled", -9, -4): [None] + [0.11] * 4,
            ("l2", -9, -3): [None] + [0.13] * 4, ("sgdw", -5, -2): [None, None] + [0.11] * 3}
    registered = reg.claims23(_study23(-3, full))[0]
    assert "lambda = 0 alpha 0.007812" in registered.measured, registered
    two_a2 = reg.claims23(_study23(-3, full).pipe(lambda d: pd.concat(
        [d, pd.DataFrame([_run("adam", "none", 2.0 ** -1, 0.0, 0, 0.15)])])), True, True)[0]
    assert two_a2.verdict == "incomplete" and "adam/none" in two_a2.measured, two_a2
    [a2_row, _] = reg.verdicts_a2("claims_cpu", _study23(-3, full))
    assert a2_row.claim == "2, amended A1+A2"
    assert reg.verdicts_a2("claims_cpu", _study23(-7, full)) == []


def test_claim1_reads_its_registered_seeds_only():
    """Claim 3 brings SGDW's chosen cell to seeds 0-4; claim 1's statistic stays on seeds 0
    and 1, so those later seeds change neither its numbers nor its edge extensions."""
    runs = _claim1_runs(-1.0, 0.0, np.random.default_rng(4))
    cell = runs[(runs.decay == "decoupled") & (runs.seed == 0)].iloc[[2]]
    later = pd.concat([cell.assign(seed=s, val_error=0.5, test_error=0.5) for s in (2, 3, 4)])
    both = pd.concat([runs, later], ignore_index=True)
    assert reg.claim1(both) == reg.claim1(runs)
    assert reg.extensions(both) == reg.extensions(runs)
