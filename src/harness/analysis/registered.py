"""The four-claim study's pre-registered statistics (REPRODUCTION.md, "Pre-registered").

Written before the runs they judge; `harness.analysis.claims` applies them as they are here.

Where an optimum lies. Per group g (an alpha column for claim 1, an epoch budget for claim 4)
the runs give the seed-mean validation error z(y) at grid points y = log2 lambda_norm. The
optimum y*_g is the vertex of the parabola fitted (least squares) through the grid argmin and
up to two neighbours on each side (at least three points), kept inside those points; a fit that
is not convex gives the argmin. A group whose argmin lies on its grid's edge is not bracketed.
The statistic is the least-squares slope of y*_g against the group's coordinate x_g
(log2 alpha, or log2 T).

Its interval: a seed-noise bootstrap. sigma is the pooled sd of a single run over every cell
with several seeds (s^2 = sum (n_i - 1) s_i^2 / sum (n_i - 1)); each replicate redraws every
cell's mean as itself plus N(0, sigma^2 / n_i) and recomputes the slope; the interval is the
2.5 and 97.5 percentiles of REPLICATES replicates. The means already carry that noise once,
so the interval is wider than the truth, never narrower.

Differences of methods: paired by seed, with Student t intervals (scipy.stats.t, n - 1 df);
equivalence by two one-sided tests at 5% (the 90% interval inside (-bound, +bound)); non-
inferiority by the one-sided 95% upper bound below a margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

REPLICATES = 2000
NEIGHBOURS = 2           # grid points on each side of the argmin in the local fit
COUPLED = (-1.5, -0.5)   # claim 1: slope intervals inside these read coupled / separable
SEPARABLE = (-0.5, 0.5)
TRANSFER = {-0.5: "constant EMA timescale", 0.0: "lambda_norm transfers",
            0.5: "raw lambda transfers"}  # claim 4: the slope each hypothesis predicts


def locate(y: np.ndarray, z: np.ndarray) -> tuple[float, bool]:
    """(y*, bracketed): the local-fit optimum of z over the sorted grid y (module docstring)."""
    i = int(np.argmin(z))
    lo, hi = max(0, i - NEIGHBOURS), min(len(y), i + NEIGHBOURS + 1)
    bracketed = 0 < i < len(y) - 1
    if hi - lo < 3:
        return float(y[i]), bracketed
    a, b, _ = np.polyfit(y[lo:hi], z[lo:hi], 2)
    if a <= 0:
        return float(y[i]), bracketed
    return float(np.clip(-b / (2 * a), y[lo], y[hi - 1])), bracketed


def pooled_sd(runs: pd.DataFrame, value: str = "z") -> tuple[float, int]:
    """(sigma, dof): the pooled sd of a single run over cells (x, y) with several seeds."""
    groups = runs.groupby(["x", "y"])[value]
    dof = int((groups.count() - 1).clip(lower=0).sum())
    if dof == 0:
        return math.nan, 0
    return float(math.sqrt((groups.var(ddof=1).fillna(0) * (groups.count() - 1)).sum() / dof)), dof


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(x, y, 1)[0]) if len(set(x)) > 1 else math.nan


@dataclass(frozen=True)
class OptimumSlope:
    """The slope of the located optimum against x, its bootstrap interval and its parts."""

    estimate: float
    low: float
    high: float
    optima: tuple[tuple[float, float], ...]  # (x_g, y*_g) per group
    unbracketed: tuple[float, ...]           # x_g of groups whose argmin is on an edge
    sigma: float                             # pooled single-run sd (error fraction)
    dof: int                                 # its degrees of freedom

    @property
    def testable(self) -> bool:
        return not self.unbracketed and len(self.optima) >= 2 and self.dof > 0


def optimum_slope(runs: pd.DataFrame, seed: int = 0) -> OptimumSlope:
    """runs: one row per run with x (group coordinate), y (log2 lambda_norm), z (validation
    error). The slope of y* against x with its seed-noise bootstrap interval."""
    sigma, dof = pooled_sd(runs)
    cells = runs.groupby(["x", "y"])["z"].agg(["mean", "count"]).reset_index()
    groups = [(x, g.sort_values("y")) for x, g in cells.groupby("x")]

    def slope_of(means: list[np.ndarray]) -> tuple[float, list[tuple[float, float]], list[float]]:
        optima, edges = [], []
        for (x, g), z in zip(groups, means, strict=True):
            y_star, bracketed = locate(g["y"].to_numpy(), z)
            optima.append((float(x), y_star))
            if not bracketed:
                edges.append(float(x))
        return _slope(*map(np.array, zip(*optima, strict=True))), optima, edges

    estimate, optima, edges = slope_of([g["mean"].to_numpy() for _, g in groups])
    low = high = math.nan
    if dof > 0 and len(groups) >= 2:
        rng = np.random.default_rng(seed)
        draws = [slope_of([g["mean"].to_numpy() + rng.normal(0, sigma, len(g))
                           / np.sqrt(g["count"].to_numpy()) for _, g in groups])[0]
                 for _ in range(REPLICATES)]
        low, high = (float(v) for v in np.percentile(draws, [2.5, 97.5]))
    return OptimumSlope(estimate, low, high, tuple(optima), tuple(edges), sigma, dof)


def coupling_reading(s: OptimumSlope) -> str:
    """Claim 1's registered reading: coupled, separable, not decided, or not testable here."""
    if not s.testable:
        return "not testable here"
    for name, (lo, hi) in (("coupled", COUPLED), ("separable", SEPARABLE)):
        if lo < s.low and s.high < hi:
            return name
    return "not decided"


def transfer_reading(s: OptimumSlope) -> str:
    """Claim 4's registered reading: the one prediction inside the interval, if exactly one."""
    if not s.testable:
        return "not testable here"
    inside = [p for p in TRANSFER if s.low <= p <= s.high]
    return f"{inside[0]:+.1f} ({TRANSFER[inside[0]]})" if len(inside) == 1 else "not decided"


@dataclass(frozen=True)
class Paired:
    """The mean of paired differences a - b over n seeds, with two t intervals (n - 1 df)."""

    mean: float
    sd: float
    n: int

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """The two-sided `level` t interval of the mean difference."""
        if self.n < 2:
            return math.nan, math.nan
        half = sps.t.ppf(0.5 + level / 2, self.n - 1) * self.sd / math.sqrt(self.n)
        return self.mean - half, self.mean + half

    def equivalent(self, bound: float) -> bool:
        """Two one-sided tests at 5%: the 90% interval inside (-bound, +bound)."""
        low, high = self.interval(0.90)
        return -bound < low and high < bound

    def below(self, margin: float) -> bool:
        """Non-inferiority: the one-sided 95% upper bound (the 90% interval's) below margin."""
        return self.interval(0.90)[1] < margin

    def above(self, margin: float) -> bool:
        """The one-sided 95% lower bound above margin."""
        return self.interval(0.90)[0] > margin


def paired(a: pd.Series, b: pd.Series) -> Paired:
    """a - b over the seeds both have (Series indexed by seed)."""
    d = (a - b).dropna()
    return Paired(float(d.mean()), float(d.std(ddof=1)) if len(d) > 1 else math.nan, len(d))
