"""Statistics that survive noise: the basin's ridge slope, the damage frontier, noise, differences.

Coordinates: x = log2 alpha, y = log2 lambda (the grid axis ``lam``), z = final top-1 error
(a fraction). A slope is d y / d x: 0 means separable (the best lambda does not move with
alpha: the paper's SGDW/AdamW), -1 means coupled (alpha*lambda constant: SGD+L2, PyTorch's
lr-scaled AdamW in the paper's units). A slope whose 95% interval is wider than 1 (the
distance between coupled and separable) is *undetermined*, and no number is reported for it.

One idea, read top to bottom, so one file over the usual 300 lines (docs/DESIGN.md section 4):
every number the report and the claims print comes with its uncertainty. A slope and its
interval (``Slope``), from the basin (``basin_slope``) and from the damage frontier
(``frontier_slope``, its margin set by the seed noise); the seed noise itself (``Noise``);
differences of final errors with their standard error (``Diff``); and one panel's statistics
together (``PanelFits``), as the report table, the claims and the heatmap read them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from harness.analysis.frames import USABLE, at_chance, ranked, signed

WIDTH = 1.0          # interval width above which a slope is undetermined: |(-1) - 0|
CLOSE = 0.2          # a determined slope within 0.2 of 0 (-1) reads separable (coupled)
MIN_CELLS = 10       # a quadratic surface has 6 coefficients; 10 cells leave 4 to spare
BOOTSTRAP = 400      # resamples of the window's cells (all seeds of a cell go together)
MARGIN = 0.02        # damage frontier: error first exceeds the column's best by 2 points...
NOISE_MARGIN = 3.0   # ...or by 3 noise sigmas, whichever is larger


def t975(dof: int) -> float:
    """Student t quantile 0.975 (two-sided 95%) with `dof` degrees of freedom (scipy)."""
    return float(sps.t.ppf(0.975, dof)) if dof >= 1 else math.nan


@dataclass(frozen=True)
class Slope:
    """A slope dlog2 lambda / dlog2 alpha with its 95% interval [low, high]."""

    estimate: float
    low: float
    high: float
    n: int               # cells (basin) or alpha columns (frontier) used
    method: str
    reason: str = ""     # why it is undetermined; "" when determined
    resid_sd: float = math.nan  # residual sd of the fit (error fraction)
    intercept: float = math.nan  # the line log2 lambda = intercept + estimate * log2 alpha

    @property
    def determined(self) -> bool:
        return not self.reason

    def reading(self) -> str:
        """separable / coupled / in between: the value its interval covers, or the one
        within CLOSE of the estimate; or "undetermined" (``text`` says why)."""
        if not self.determined:
            return "undetermined"
        if self.low <= 0 <= self.high or abs(self.estimate) <= CLOSE:
            return "separable"
        if self.low <= -1 <= self.high or abs(self.estimate + 1) <= CLOSE:
            return "coupled"
        return "in between (the interval excludes 0 and -1)"

    def text(self) -> str:
        """``-0.98 [-1.10, -0.85]``, or ``undetermined (...)``: never a bare number."""
        if not self.determined:
            return f"undetermined ({self.reason})"
        return f"{signed(self.estimate)} [{signed(self.low)}, {signed(self.high)}]"


def _xyz(points: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.log2(points["lr"].to_numpy(float)), np.log2(points["lam"].to_numpy(float)),
            points["test_error"].to_numpy(float))


def _ridge(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[float, np.ndarray]:
    """Fit z = c0 + c1 x + c2 y + c3 x^2 + c4 xy + c5 y^2 (least squares); its ridge
    y*(x) = -(c2 + c4 x) / (2 c5) has slope -c4 / (2 c5); NaN if no minimum in y (c5 <= 0)."""
    design = np.column_stack([np.ones_like(x), x, y, x * x, x * y, y * y])
    coef = np.linalg.lstsq(design, z, rcond=None)[0]
    return (-coef[4] / (2 * coef[5]) if coef[5] > 0 else math.nan), coef


def basin_window(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells near the minimum: usable cells (lambda > 0, not failed, no seed diverged or at
    chance, error < 0.9 x chance) in the lower half of the panel's errors, at least MIN_CELLS
    of them."""
    ok = ranked(cells)
    ok = ok[(ok["lam"] > 0) & (ok["n_at_chance"] == 0)
            & (ok["test_error"] < USABLE * ok["chance"])]
    keep = max(MIN_CELLS, int(math.ceil(len(ok) / 2)))
    return ok.sort_values("test_error", kind="stable").head(keep)


def basin_slope(cells: pd.DataFrame, runs: pd.DataFrame) -> Slope:
    """Ridge slope of a quadratic surface fitted to the basin, with a bootstrap interval.

    ``cells``: one panel's cells (``frames.cells``); ``runs``: its per-seed finals
    (``frames.finals``). The window is chosen on cell means (``basin_window``); the fit uses
    every seed of those cells; the 95% interval is the percentile interval of BOOTSTRAP
    resamples of the window's cells with their seeds (seeded, so reports are reproducible).
    """
    method = (f"quadratic surface in (log2 α, log2 λ) over the lower half of the usable cells "
              f"(≥ {MIN_CELLS}); ridge slope −c_xy/(2c_yy); 95% bootstrap interval over cells")
    window = basin_window(cells)
    n = len(window)
    if n < MIN_CELLS:
        return Slope(math.nan, math.nan, math.nan, n, method,
                     f"{n} usable cells; a quadratic surface needs {MIN_CELLS}")
    if window["lr"].nunique() < 3 or window["lam"].nunique() < 3:
        return Slope(math.nan, math.nan, math.nan, n, method,
                     "the basin spans fewer than 3 α or 3 λ values")
    pts = runs[~runs["failed"] & ~at_chance(runs)].merge(window[["lr", "lam"]],
                                                         on=["lr", "lam"])
    x, y, z = _xyz(pts)
    x0, y0 = x.mean(), y.mean()  # centring: the slope is unchanged, the fit better posed
    est, coef = _ridge(x - x0, y - y0, z)
    design = np.column_stack([np.ones_like(x), x - x0, y - y0, (x - x0) ** 2,
                              (x - x0) * (y - y0), (y - y0) ** 2])
    resid_sd = float(np.sqrt(np.sum((z - design @ coef) ** 2) / max(len(z) - 6, 1)))
    if math.isnan(est):
        return Slope(est, math.nan, math.nan, n, method, "the fitted surface has no minimum "
                     "in λ", resid_sd)
    best_x = math.log2(float(window["lr"].iloc[0])) - x0
    y_star = -(coef[2] + coef[4] * best_x) / (2 * coef[5]) + y0
    if not y.min() - 0.5 <= y_star <= y.max() + 0.5:
        return Slope(est, math.nan, math.nan, n, method, f"λ* ≈ 2^{y_star:.1f} lies outside "
                     "the λ grid", resid_sd)
    boot = _bootstrap(pts, x - x0, y - y0, z)
    low, high = np.percentile(boot[np.isfinite(boot)], [2.5, 97.5]) if \
        np.isfinite(boot).any() else (math.nan, math.nan)
    missing = float(np.mean(~np.isfinite(boot)))
    reason = (f"no minimum in λ in {100 * missing:.0f}% of bootstrap resamples" if missing > 0.05
              else f"95% interval {signed(low)} … {signed(high)} is wider than {WIDTH:g}"
              if high - low > WIDTH else "")
    intercept = y0 - (coef[2] - coef[4] * x0) / (2 * coef[5])  # y*(x) in uncentred x
    return Slope(float(est), float(low), float(high), n, method, reason, resid_sd,
                 float(intercept))


def _bootstrap(pts: pd.DataFrame, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Ridge slopes of BOOTSTRAP resamples of the cells (a cell's seeds stay together)."""
    rng = np.random.default_rng(0)
    cell = pts.groupby(["lr", "lam"], sort=False).ngroup().to_numpy()
    members = [np.flatnonzero(cell == c) for c in range(cell.max() + 1)]
    out = []
    for _ in range(BOOTSTRAP):
        idx = np.concatenate([members[c] for c in rng.integers(0, len(members), len(members))])
        if len(np.unique(x[idx])) < 3 or len(np.unique(y[idx])) < 3:
            continue  # degenerate resample: no surface can be fitted, not a "no minimum"
        out.append(_ridge(x[idx], y[idx], z[idx])[0])
    return np.array(out, dtype=float)


def frontier_margin(sigma: float) -> float:
    """The stated damage margin: MARGIN, or NOISE_MARGIN noise sigmas when that is larger."""
    return max(MARGIN, NOISE_MARGIN * sigma) if math.isfinite(sigma) else MARGIN


def _frontier(col: pd.DataFrame, margin: float, by: str = "test_error") -> float:
    """log2 lambda where the column's error `by` first exceeds its best + margin, above the
    best lambda (linear interpolation between the two cells around the crossing); NaN if
    never."""
    y, z = np.log2(col["lam"].to_numpy(float)), col[by].to_numpy(float)
    i = int(np.argmin(z))
    limit = z[i] + margin
    for j in range(i + 1, len(z)):
        if z[j] > limit:
            return float(y[j - 1] + (limit - z[j - 1]) / (z[j] - z[j - 1]) * (y[j] - y[j - 1]))
    return math.nan


def frontier_points(cells: pd.DataFrame, margin: float,
                    by: str = "test_error") -> tuple[list[tuple[float, float]], int]:
    """The damage frontier of one panel on the error `by`: (log2 alpha, log2 lambda_f) for
    each alpha column where it lies inside the lambda grid, and the number of columns where it
    lies above it. Columns with one lambda or no usable cell (all near chance) have none."""
    ok = ranked(cells)
    ok = ok[ok["lam"] > 0]
    points, censored = [], 0
    for lr, col in ok.groupby("lr"):
        col = col.sort_values("lam")
        if len(col) < 2 or col[by].min() >= USABLE * col["chance"].max():
            continue
        yf = _frontier(col, margin, by)
        censored += math.isnan(yf)
        if not math.isnan(yf):
            points.append((math.log2(lr), yf))
    return points, censored


def frontier_slope(cells: pd.DataFrame, margin: float, by: str = "test_error") -> Slope:
    """Slope of the damage frontier log2 lambda_f(alpha) on log2 alpha, least squares with a
    t interval. It shows the coupling even where decay never helps: a coupled update is
    damaged where alpha*lambda is large (slope -1), a separable one where lambda is (0)."""
    return _fit_frontier(*frontier_points(cells, margin, by), margin)


def _fit_frontier(points: list[tuple[float, float]], censored: int, margin: float) -> Slope:
    method = (f"per α column, the λ where error first exceeds the column's best by "
              f"{100 * margin:.1f} points; least squares with a 95% t interval")
    n = len(points)
    if n < 3:
        return Slope(math.nan, math.nan, math.nan, n, method, f"the frontier lies inside the λ "
                     f"grid in {n} α columns ({censored} above it); a slope needs 3")
    x, y = np.array(points).T
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (intercept + slope * x)
    se = math.sqrt(float(resid @ resid) / (n - 2) / float(((x - x.mean()) ** 2).sum())) \
        if n > 2 else math.nan
    half = t975(n - 2) * se
    reason = f"95% interval ±{half:.2f} is wider than {WIDTH:g}" if 2 * half > WIDTH else ""
    return Slope(float(slope), slope - half, slope + half, n, method, reason,
                 math.sqrt(float(resid @ resid) / max(n - 2, 1)), float(intercept))


@dataclass(frozen=True)
class Noise:
    """Seed-to-seed standard deviation of the final error (fraction), pooled over cells;
    ``near``: pooled only over cells within that much of their α column's best."""

    sigma: float
    cells: int      # cells with >= 2 seeds
    dof: int
    near: float | None = None

    def short(self) -> str:
        """For a figure title: ``σ = 0.41 pts (3 cells)``."""
        if not math.isfinite(self.sigma):
            return "σ unknown (1 seed)"
        where = f" within {100 * self.near:g} pts of the best" if self.near else ""
        return (f"σ = {100 * self.sigma:.2f} pts ({self.cells} cell{'s' * (self.cells > 1)}"
                f"{where})")

    def text(self) -> str:
        if not math.isfinite(self.sigma):
            return "noise unknown (one seed per cell)"
        where = f" within {100 * self.near:g} pts of their α column's best" if self.near else ""
        return (f"σ = {100 * self.sigma:.2f} pts (seeds of {self.cells} cells{where}, "
                f"{self.dof} dof)")


def noise(runs: pd.DataFrame, near: float | None = None) -> Noise:
    """Pooled within-cell seed sd: sqrt(sum (n_c - 1) s_c^2 / sum (n_c - 1)).

    ``near``: pool only the cells whose seed-mean error is within ``near`` of the best
    seed-mean in their (panel, α) column. Seed noise is not uniform: where decay damages
    training the seeds part by several points (a near-chance cell by tens), while the damage
    frontier is decided against the noise of the cells near each column's best. A run that
    diverged or never left chance (`frames.at_chance`) is a failure to train, not seed noise,
    and is left out."""
    ok = runs[~at_chance(runs) & ~runs["failed"] & np.isfinite(runs["test_error"])]
    if near is not None:
        mean = ok.groupby(["panel", "lr", "lam"])["test_error"].transform("mean")
        best = mean.groupby([ok["panel"], ok["lr"]]).transform("min")
        ok = ok[mean <= best + near]
    groups = [g["test_error"].to_numpy(float) for _, g in ok.groupby(["panel", "lr", "lam"])]
    groups = [g for g in groups if len(g) > 1]
    dof = sum(len(g) - 1 for g in groups)
    if not dof:
        return Noise(math.nan, 0, 0, near)
    var = sum(((g - g.mean()) ** 2).sum() for g in groups) / dof
    return Noise(math.sqrt(var), len(groups), dof, near)


@dataclass(frozen=True)
class Diff:
    """mean(a - b) of final errors over seeds (paired when the seeds match), with its SE."""

    mean: float
    se: float
    n: int
    paired: bool

    @property
    def half(self) -> float:
        """Half the 95% t interval: t(0.975, n - 1) x SE (n - 1 dof, paired or the smaller
        group's when unpaired: conservative)."""
        return t975(self.n - 1) * self.se

    @property
    def resolved(self) -> bool:
        """0 lies outside the difference's 95% t interval."""
        return math.isfinite(self.half) and abs(self.mean) > self.half

    def text(self) -> str:
        se = (f" ± {100 * self.se:.2f} SE, 95% ± {100 * self.half:.2f}"
              if math.isfinite(self.half) else " (SE unknown)")
        kind = "paired seeds" if self.paired else "unpaired"
        return f"{signed(100 * self.mean)}{se} pts ({kind}, n={self.n})"


def difference(a: pd.DataFrame, b: pd.DataFrame) -> Diff:
    """Final test error of runs ``a`` minus runs ``b`` (rows of ``frames.finals``)."""
    ea = a.set_index("seed")["test_error"].astype(float)
    eb = b.set_index("seed")["test_error"].astype(float)
    common = ea.index.intersection(eb.index)
    if len(common) >= 2:
        d = ea[common] - eb[common]
        return Diff(float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))), len(d), True)
    se = math.sqrt(ea.var(ddof=1) / len(ea) + eb.var(ddof=1) / len(eb)) \
        if len(ea) > 1 and len(eb) > 1 else math.nan
    return Diff(float(ea.mean() - eb.mean()), se, min(len(ea), len(eb)), False)


@dataclass(frozen=True)
class PanelFits:
    """One panel's separability statistics, as the report table, the claims and the heatmap
    read them: its noise, basin ridge, damage margin, frontier and the frontier's points."""

    noise: Noise
    basin: Slope
    margin: float
    frontier: Slope
    frontier_points: list[tuple[float, float]]


def panel_fits(cells: pd.DataFrame, runs: pd.DataFrame) -> PanelFits:
    """``cells``: one panel's cells (``frames.cells``); ``runs``: its per-seed finals. The
    frontier margin is ``frontier_margin`` of the panel's seed noise near each column's best
    (within MARGIN): the noise against which a column's first damaged cell is told apart."""
    sd = noise(runs, near=MARGIN)
    margin = frontier_margin(sd.sigma)
    points, censored = frontier_points(cells, margin)
    return PanelFits(sd, basin_slope(cells, runs), margin,
                     _fit_frontier(points, censored, margin), points)
