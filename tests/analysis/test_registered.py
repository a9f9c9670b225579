"""The pre-registered statistics of the four-claim study (harness.analysis.registered)."""

import math

import numpy as np
import pandas as pd
import pytest

from harness.analysis import registered as reg


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
    assert reg.transfer_reading(s) == "+0.5 (raw lambda transfers)"
    wide = reg.OptimumSlope(0.2, -0.3, 0.7, ((0, 0), (1, 0)), (), 0.01, 5)
    assert reg.transfer_reading(wide) == "not decided"


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
