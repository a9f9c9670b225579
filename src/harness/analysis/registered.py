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

Amendment A1 (REPRODUCTION.md, committed after the rules above, when seed 1 sat at chance at
alpha 2^-1): a run whose final validation error is at or above USABLE x chance did not train.
`verdicts(..., amended=True)` leaves such runs out of every statistic; the registered verdicts
(`amended=False`) stay as they were and come first in the report.

Amendment A2 (REPRODUCTION.md, committed after the grid of claims 2 and 3 had been seen, before
any run it adds): an Adam method whose cell chosen on seed 0 lies on the edge of the alpha grid
gains alpha columns beyond it by the common edge rule (x4 a step, at most EXTENSIONS, seed 0,
the registered lambdas; `alpha_extensions`). `verdicts_a2` reads claims 2 and 3 on that wider
grid, A1 applied (`claims23(..., a2=True)`); the registered reading keeps to ALPHAS23.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from harness.analysis import stats
from harness.analysis.frames import at_chance

REPLICATES = 2000
NEIGHBOURS = 2           # grid points on each side of the argmin in the local fit
COUPLED = (-1.5, -0.5)   # claim 1: slope intervals inside these read coupled / separable
SEPARABLE = (-0.5, 0.5)
# claim 4: the slope each hypothesis predicts. tau = b/(B*lambda_paper) epochs = sqrt(b*T/B) /
# lambda_norm, so a fixed tau in epochs is a fixed raw lambda (+0.5), and a tau that is a fixed
# fraction of the run (tau ~ T) is -0.5 (REPRODUCTION.md, claim 4's erratum)
TRANSFER = {-0.5: "the EMA timescale a fixed fraction of the run",
            0.0: "lambda_norm transfers: the paper's normalization",
            0.5: "raw lambda transfers: a fixed EMA timescale in epochs"}


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
    return prediction(inside[0]) if len(inside) == 1 else "not decided"


def prediction(slope: float) -> str:
    """One of claim 4's predictions as the reports name it: "+0.5 (raw lambda transfers: ...)"."""
    return f"{slope:+.1f} ({TRANSFER[slope]})"


def predictions() -> str:
    """All of claim 4's predictions, the paper's (0) first."""
    return ", ".join(prediction(p) for p in sorted(TRANSFER, key=lambda p: (abs(p), -p)))


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


# The verdicts. Each reads `frames.finals` (one row per run: optimizer, decay, lr, lam,
# epochs, seed, val_error, test_error, failed) of its study and applies the rules above as
# REPRODUCTION.md registered them. Errors are fractions; the texts print points.

PILOT_GAIN = 0.01        # the pilot: the best decay must beat lambda = 0 by 1 point on validation
PILOT_RUNS = 14          # its registered runs per budget: 7 cells x 2 seeds
CLAIM1_RUNS = 30         # per method: 3 alpha columns x 5 lambdas x 2 seeds (before extensions)
CLAIM1_SEEDS = (0, 1)    # claim 1's seeds (its cells read no later seed a claim-3 cell gained)
FRONTIER = 0.02          # claim 1's second reading: validation error 2 points over a column's best
COLUMN = 5               # claim 1: the lambdas of a registered alpha column
EXTENSIONS = 3           # claim 1: an edge argmin extends its column by one octave, at most 3x
CLAIM4_RUNS = 42         # AdamW: 3 budgets x 7 lambdas x 2 seeds
EQUIVALENCE = 0.01       # claim 2: Adam+L2's gain within +-1 point
NON_INFERIOR = 0.10      # claim 3: AdamW within 10% (relative) of SGDW's test error
FULL_SEEDS = 5           # claims 2 and 3: the chosen cells' seeds


@dataclass(frozen=True)
class Verdict:
    claim: str
    measured: str        # the numbers with their noise and the criterion applied
    verdict: str         # supported | contradicted | not decided | not testable here | ...


def _usable(per_run: pd.DataFrame) -> pd.DataFrame:
    return per_run[~per_run["failed"]]


def untrained(per_run: pd.DataFrame) -> pd.Series:
    """A1: the runs that did not train (`frames.at_chance`: final validation error >= USABLE x
    chance; a diverged run counts at chance)."""
    return at_chance(per_run)


def _scored(runs: pd.DataFrame, amended: bool) -> pd.DataFrame:
    """The runs a statistic reads: all of them as registered, the trained ones under A1."""
    return runs[~untrained(runs)] if amended else runs


def _cell_means(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return runs.groupby(keys, dropna=False)[["val_error", "test_error"]].mean().reset_index()


def pilot(per_run: pd.DataFrame, amended: bool = False) -> list[Verdict]:
    """Per epoch budget: go on if the best decay cell's seed-mean validation error is
    PILOT_GAIN below lambda = 0's (a budget raised because a smaller one fell short is a row
    of its own)."""
    return [_pilot(runs, int(epochs), amended) for epochs, runs in per_run.groupby("epochs")]


def _pilot(per_run: pd.DataFrame, epochs: int, amended: bool) -> Verdict:
    finished = _usable(per_run)
    runs = _scored(finished, amended)
    means = _cell_means(runs, ["decay", "lam"])
    base = means[(means["decay"] == "none") | (means["lam"] == 0)]
    decayed = means[(means["decay"] != "none") & (means["lam"] > 0)]
    if base.empty or decayed.empty:
        return Verdict(f"pilot, {epochs} epochs", "needs lambda = 0 and decay cells",
                       "not testable here")
    best = decayed.loc[decayed["val_error"].idxmin()]
    gain = float(base["val_error"].iloc[0] - best["val_error"])
    sigma, dof = pooled_sd(runs.assign(x=runs["decay"], y=runs["lam"], z=runs["val_error"]))
    text = (f"lambda = 0 {100 * base['val_error'].iloc[0]:.2f}% validation error, best decay "
            f"{best['decay']} at lambda_norm {best['lam']:.4g} {100 * best['val_error']:.2f}% "
            f"(seed means): gain {100 * gain:+.2f} points; single-run sd {100 * sigma:.2f} "
            f"points ({dof} dof) [rule: go on if the gain is at least {100 * PILOT_GAIN:.0f} "
            "point]")
    if len(finished) < PILOT_RUNS:
        return Verdict(f"pilot, {epochs} epochs", f"so far: {text}",
                       f"incomplete ({len(finished)} of {PILOT_RUNS} registered runs)")
    return Verdict(f"pilot, {epochs} epochs", text,
                   "go on" if gain >= PILOT_GAIN else "raise the budget")


def xyz(runs: pd.DataFrame, x: str, z: str = "val_error") -> pd.DataFrame:
    """`optimum_slope`'s input: x = log2 of column `x`, y = log2 lambda, z = the score `z`."""
    return pd.DataFrame({"x": np.log2(runs[x].astype(float)), "y": np.log2(runs["lam"]),
                         "seed": runs["seed"], "z": runs[z]})


def slope_text(s: OptimumSlope, of: str) -> str:
    """The slope, its interval and the located optima; a group coordinate x (log2) as 2^x when
    every x is a whole power of 2 (alpha columns), else as its value (budgets 4, 12, 36)."""
    powers = all(float(x).is_integer() for x, _ in s.optima)

    def at(x: float) -> str:
        return f"2^{x:g}" if powers else f"{2 ** x:.4g}"

    optima = ", ".join(f"2^{y:.2f} at {of} {at(x)}" for x, y in s.optima)
    edges = f"; argmin on the grid edge at {of} " + ", ".join(at(x) for x in s.unbracketed) \
        if s.unbracketed else ""
    return (f"slope {s.estimate:+.2f} [{s.low:+.2f}, {s.high:+.2f}] (optima {optima}; "
            f"single-run sd {100 * s.sigma:.2f} points, {s.dof} dof{edges})")


def claim1(per_run: pd.DataFrame, amended: bool = False) -> Verdict:
    """SGD+L2 coupled and SGDW separable, by the located optimum's slope against log2 alpha."""
    runs = _usable(per_run)
    readings, parts = {}, []
    pending = extensions(per_run)
    for decay, name in (("l2", "SGD+L2"), ("decoupled", "SGDW")):
        r = runs[(runs["optimizer"] == "sgd") & (runs["decay"] == decay) & (runs["lam"] > 0)
                 & runs["seed"].isin(CLAIM1_SEEDS)]
        scored = _scored(r, amended)
        if scored.empty:  # the registered panel has no finished (or, under A1, trained) run
            readings[name] = f"incomplete ({len(r)} of {CLAIM1_RUNS} registered runs)"
            parts.append(f"{name}: no {'trained' if len(r) else 'finished'} run yet")
            continue
        s = optimum_slope(xyz(scored, "lr"))
        readings[name] = coupling_reading(s)
        parts.append(f"{name}: {slope_text(s, 'alpha')}, reads {readings[name]}; "
                     f"{frontier_text(scored)}")
        if len(r) < CLAIM1_RUNS:
            readings[name] = f"incomplete ({len(r)} of {CLAIM1_RUNS} registered runs)"
        elif alphas := [f"2^{math.log2(lr):g}" for d, lr, _ in pending if d == decay]:
            readings[name] = f"incomplete (edge extension pending at alpha {', '.join(alphas)})"
    incomplete = [f"{n} {v}" for n, v in readings.items() if v.startswith("incomplete")]
    if incomplete:
        verdict = "; ".join(incomplete)
    elif "not testable here" in readings.values():
        verdict = "not testable here"
    elif readings["SGD+L2"] == "separable" or readings["SGDW"] == "coupled":
        verdict = "contradicted"
    elif readings == {"SGD+L2": "coupled", "SGDW": "separable"}:
        verdict = "supported"
    else:
        verdict = "not decided"
    return Verdict("1", "; ".join(parts) + " [coupled: interval inside (-1.5, -0.5); "
                   "separable: inside (-0.5, 0.5)]", verdict)


def extensions(per_run: pd.DataFrame, seeds: int = 2) -> list[tuple[str, float, float]]:
    """Claim 1's registered edge extensions still to run: (decay, alpha, lambda_norm) one
    octave beyond the edge of each complete SGD column (every lambda at `seeds` finished
    runs) whose seed-mean validation argmin is on that edge, while it has had fewer than
    EXTENSIONS. Decided on the registered seed means (A1 does not change it)."""
    runs = _usable(per_run)
    runs = runs[(runs["optimizer"] == "sgd") & (runs["lam"] > 0) & runs["seed"].isin(CLAIM1_SEEDS)]
    out = []
    for (decay, lr), col in runs.groupby(["decay", "lr"], sort=True):
        means = col.groupby("lam")["val_error"].agg(["mean", "count"]).sort_index()
        if (means["count"] < seeds).any() or len(means) >= COLUMN + EXTENSIONS:
            continue
        i = int(np.argmin(means["mean"].to_numpy()))
        if i in (0, len(means) - 1):
            out.append((str(decay), float(lr), float(means.index[i]) * (0.5 if i == 0 else 2.0)))
    return out


GRID23 = {"decoupled": (3, 5), "l2": (3, 4)}  # claims 2, 3: registered alphas and lambdas
ALPHAS23 = (2.0 ** -11, 2.0 ** -9, 2.0 ** -7)  # claims 2, 3: the registered Adam alphas
ALPHA_STEP = 4.0                               # A2: one step of that alpha grid


def grid23(per_run: pd.DataFrame, a2: bool) -> pd.DataFrame:
    """The runs claims 2 and 3 read: as registered, Adam at ALPHAS23 only (lambda extensions
    included); under A2, every alpha."""
    return per_run if a2 else per_run[(per_run["optimizer"] != "adam")
                                      | per_run["lr"].isin(ALPHAS23)]


def extensions23(per_run: pd.DataFrame, a2: bool = False) -> list[tuple[str, float, float]]:
    """Claims 2 and 3's edge extensions still to run (REPRODUCTION.md: the common rule on the
    lambdas of each decayed Adam panel): (decay, alpha, lambda_norm) at seed 0. Once the
    panel's registered grid is finished, the lambdas at the alpha of its cell with the lowest
    validation error gain one grid step beyond their edge when that cell lies on it, while
    they have had fewer than EXTENSIONS. `a2`: on A2's alphas too."""
    return [cell for cell, exhausted in _edges23(grid23(per_run, a2)) if not exhausted]


def _edges23(per_run: pd.DataFrame) -> list[tuple[tuple[str, float, float], bool]]:
    """((decay, alpha, lambda_norm) beyond an edge argmin, no extension left) per Adam panel."""
    runs = _usable(per_run)
    runs = runs[(runs["optimizer"] == "adam") & (runs["seed"] == 0) & (runs["lam"] > 0)]
    out = []
    for decay, (n_alpha, n_lam) in GRID23.items():
        means = runs[runs["decay"] == decay].groupby(["lr", "lam"])["val_error"].mean()
        if len(means) < n_alpha * n_lam:
            continue  # the registered grid first
        lr, lam = means.idxmin()
        values = sorted(means.loc[lr].index)
        i = values.index(lam)
        if 0 < i < len(values) - 1:
            continue
        step = values[1] / values[0] if i == 0 else values[-1] / values[-2]
        beyond = values[0] / step if i == 0 else values[-1] * step
        out.append(((str(decay), float(lr), float(beyond)), len(values) >= n_lam + EXTENSIONS))
    return out


def frontier_text(runs: pd.DataFrame) -> str:
    """Claim 1's second reading, with no verdict of its own: the damage frontier's slope on the
    seed-mean validation error, margin FRONTIER (stats.frontier_slope)."""
    cells = runs.groupby(["lr", "lam"]).agg(
        val_error=("val_error", "mean"), test_error=("test_error", "mean"),
        chance=("chance", "max"), failed=("failed", "all")).reset_index()
    s = stats.frontier_slope(cells, FRONTIER, by="val_error")
    return f"damage frontier (validation error +{100 * FRONTIER:g} points) {s.text()}"


def _alpha_edges23(per_run: pd.DataFrame) -> tuple[list[tuple[str, float, float]], list[str]]:
    """A2: the (decay, alpha, lambda_norm) runs still to make at seed 0, and the Adam methods
    whose alpha is not bracketed after EXTENSIONS steps. First every A2 column gets the
    registered lambdas (those at every alpha of ALPHAS23), then the common lambda edge rule
    at the chosen alpha (`extensions23(a2=True)`), then a chosen cell at the smallest or
    largest alpha gains the next column beyond it."""
    runs = _usable(per_run)
    runs = runs[(runs["optimizer"] == "adam") & (runs["seed"] == 0)]
    todo, exhausted, required = [], [], {}
    for decay in ("none", *GRID23):
        r = runs[runs["decay"] == decay]
        r = r[r["lam"] > 0] if decay != "none" else r
        columns = {lr: set(g["lam"]) for lr, g in r.groupby("lr")}
        if any(a not in columns for a in ALPHAS23):
            continue  # the registered grid first
        required[decay] = sorted(set.intersection(*(columns[a] for a in ALPHAS23)))
        todo += [(decay, float(lr), float(lam)) for lr in sorted(columns) if lr not in ALPHAS23
                 for lam in required[decay] if lam not in columns[lr]]
    if todo:
        return todo, exhausted
    todo = extensions23(per_run, a2=True)
    if todo:
        return todo, exhausted
    for decay in required:
        picked = choose(runs, "adam", decay)
        r = runs[runs["decay"] == decay]
        alphas = sorted(set(r.loc[r["lam"] > 0, "lr"] if decay != "none" else r["lr"]))
        if picked[0] not in (alphas[0], alphas[-1]):
            continue
        up = picked[0] == alphas[-1]
        if sum((a > max(ALPHAS23)) if up else (a < min(ALPHAS23)) for a in alphas) >= EXTENSIONS:
            exhausted.append(f"adam/{decay}")
            continue
        lr = alphas[-1] * ALPHA_STEP if up else alphas[0] / ALPHA_STEP
        todo += [(decay, float(lr), float(lam)) for lam in required[decay]]
    return todo, exhausted


def alpha_extensions(per_run: pd.DataFrame) -> list[tuple[str, float, float]]:
    """A2's runs still to make: (decay, alpha, lambda_norm) at seed 0 (`_alpha_edges23`)."""
    return _alpha_edges23(per_run)[0]


METHODS = (("adam", "none"), ("adam", "decoupled"), ("adam", "l2"), ("sgd", "decoupled"))
CHOOSING_SEEDS = {"adam": (0,), "sgd": CLAIM1_SEEDS}  # the seeds a method's cell is chosen on


def choose(runs: pd.DataFrame, optimizer: str, decay: str) -> tuple[float, float] | None:
    """(alpha, lambda_norm) of the method's cell with the lowest mean validation error over
    its CHOOSING_SEEDS: claims 2 and 3 choose Adam's cells on seed 0, SGDW's on seeds 0 and 1
    (claim 1's grid); the seeds a chosen cell gains later never move the choice."""
    r = runs[(runs["optimizer"] == optimizer) & (runs["decay"] == decay)
             & runs["seed"].isin(CHOOSING_SEEDS[optimizer])]
    r = r[r["lam"] > 0] if decay != "none" else r
    if r.empty:
        return None
    means = _cell_means(r, ["lr", "lam"])
    best = means.loc[means["val_error"].idxmin()]
    return float(best["lr"]), float(best["lam"])


def _chosen(runs: pd.DataFrame, optimizer: str, decay: str) -> pd.Series | None:
    """The runs (test error by seed) of the method's chosen cell (`choose`)."""
    picked = choose(runs, optimizer, decay)
    if picked is None:
        return None
    lr, lam = picked
    r = runs[(runs["optimizer"] == optimizer) & (runs["decay"] == decay)]
    cell = r[(r["lr"] == lr) & (r["lam"] == lam)]
    best = {"lr": lr, "lam": lam}
    return cell.set_index("seed")["test_error"].rename(f"alpha {best['lr']:.4g}, "
                                                        f"lambda_norm {best['lam']:.4g}")


def _diff_text(name: str, p: Paired) -> str:
    low, high = p.interval()
    return f"{name} {100 * p.mean:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}] points (n={p.n})"


def claims23(per_run: pd.DataFrame, amended: bool = False,
             a2: bool = False) -> tuple[Verdict, Verdict]:
    """Claim 2 (AdamW gains over lambda = 0, Adam+L2 is equivalent to it) and claim 3 (AdamW
    non-inferior to SGDW within 10%), paired by seed over the chosen cells' FULL_SEEDS seeds;
    on the registered alphas, or with A2's (`a2`)."""
    if a2:
        todo, exhausted = _alpha_edges23(per_run)
        if todo or exhausted:
            why = (f"A2: alpha not bracketed after {EXTENSIONS} steps: {', '.join(exhausted)}"
                   if exhausted else f"A2: {len(todo)} run(s) at seed 0 still to make")
            verdict = "not testable here" if exhausted else "incomplete (A2 extension pending)"
            return Verdict("2", why, verdict), Verdict("3", why, verdict)
    per_run = grid23(per_run, a2)
    runs = _scored(_usable(per_run), amended)
    edges = _edges23(per_run)
    if edges:
        cells = "; ".join(f"adam/{d} alpha 2^{math.log2(lr):g}, lambda_norm "
                          f"2^{math.log2(lam):g}"
                          + (" (three extensions done: not bracketed)" if done else "")
                          for (d, lr, lam), done in edges)
        why = f"a chosen cell lies on its lambda grid's edge; beyond it: {cells}"
        verdict = "not testable here" if all(done for _, done in edges) else \
            "incomplete (edge extension pending)"
        return Verdict("2", why, verdict), Verdict("3", why, verdict)
    chosen = {m: _chosen(runs, *m) for m in METHODS}
    short = [f"{o}/{d}" for (o, d), c in chosen.items() if c is None or len(c) < FULL_SEEDS]
    if short:
        why = f"the chosen cells of {', '.join(short)} have fewer than {FULL_SEEDS} seeds"
        return Verdict("2", why, "incomplete"), Verdict("3", why, "incomplete")
    base, w, l2, sgdw = (chosen[m] for m in chosen)
    d_w, d_l2, w_l2, d_3 = paired(base, w), paired(base, l2), paired(l2, w), paired(w, sgdw)
    gains, equivalent = d_w.interval()[0] > 0, d_l2.equivalent(EQUIVALENCE)
    if d_w.interval()[1] <= 0 or (d_l2.interval()[0] > 0 and not w_l2.interval()[0] > 0):
        v2 = "contradicted"
    else:
        v2 = "supported" if gains and equivalent else "not decided"
    low90, high90 = d_l2.interval(0.90)
    text2 = (f"{_diff_text('AdamW gain over lambda = 0', d_w)}; "
             f"{_diff_text('Adam+L2 gain', d_l2)}, 90% [{100 * low90:+.2f}, "
             f"{100 * high90:+.2f}] ({'equivalent' if equivalent else 'not shown equivalent'} "
             f"within +-{100 * EQUIVALENCE:.0f} point); {_diff_text('AdamW over Adam+L2', w_l2)};"
             f" cells: lambda = 0 {base.name}, AdamW {w.name}, Adam+L2 {l2.name} (chosen on "
             "validation, scored on test) [95% t intervals, 4 dof]")
    margin = NON_INFERIOR * float(sgdw.mean())
    v3 = "supported" if d_3.below(margin) else "contradicted" if d_3.above(margin) else \
        "not decided"
    text3 = (f"{_diff_text('AdamW - SGDW', d_3)}; one-sided 95% bounds "
             f"[{100 * d_3.interval(0.90)[0]:+.2f}, {100 * d_3.interval(0.90)[1]:+.2f}] against "
             f"the margin {100 * margin:.2f} points (10% of SGDW's {100 * sgdw.mean():.2f}%); "
             f"cells: AdamW {w.name}, SGDW {sgdw.name}")
    edges = alpha_edges(runs)
    if edges:
        note = f"; on the alpha grid's edge (reported, not extended): {edges}"
        text2, text3 = text2 + note, text3 + note
    return Verdict("2", text2, v2), Verdict("3", text3, v3)


def alpha_edges(runs: pd.DataFrame) -> str:
    """The methods whose chosen cell lies at the smallest or largest alpha of their grid."""
    out = []
    for optimizer, decay in METHODS:
        picked = choose(runs, optimizer, decay)
        r = runs[(runs["optimizer"] == optimizer) & (runs["decay"] == decay)]
        alphas = sorted(set(r.loc[r["lam"] > 0, "lr"] if decay != "none" else r["lr"]))
        if picked is not None and len(alphas) > 1 and picked[0] in (alphas[0], alphas[-1]):
            out.append(f"{optimizer}/{decay} at 2^{math.log2(picked[0]):g}")
    return ", ".join(out)


def claim4(per_run: pd.DataFrame, amended: bool = False) -> Verdict:
    """The best lambda_norm against the budget: the slope of log2 lambda_norm* on log2 T."""
    runs = _usable(per_run)
    r = runs[(runs["optimizer"] == "adam") & (runs["decay"] == "decoupled") & (runs["lam"] > 0)]
    scored = _scored(r, amended)
    if scored["epochs"].nunique() < 2:  # a verdict needs all registered runs first
        return Verdict("4", "needs AdamW cells at two or more budgets",
                       f"incomplete ({len(r)} of {CLAIM4_RUNS} registered runs)"
                       if len(r) < CLAIM4_RUNS else "not testable here")
    s = optimum_slope(xyz(scored, "epochs"))
    reading = transfer_reading(s)
    if len(r) < CLAIM4_RUNS:
        return Verdict("4", f"so far: {slope_text(s, 'T')}, reads {reading}",
                       f"incomplete ({len(r)} of {CLAIM4_RUNS} registered runs)")
    verdict = ("supported" if reading.startswith("+0.0") else "not decided" if
               reading in ("not decided", "not testable here") else "contradicted")
    if reading == "not testable here":
        verdict = reading
    return Verdict("4", f"{slope_text(s, 'T')}, reads {reading} [predictions: "
                   f"{predictions()}]", verdict)


def verdicts(study: str, per_run: pd.DataFrame, amended: bool = False) -> list[Verdict] | None:
    """The registered verdicts of `study` (`frames.finals` of its runs), or with amendment A1
    (`amended`: the claim reads "<claim>, amended A1"); None for a study the registration does
    not cover (its report applies harness.analysis.claims instead)."""
    if study == "pilot_cpu":
        found = pilot(per_run, amended)
    elif study == "claims_cpu":
        found = [claim1(per_run, amended), *claims23(per_run, amended)]
    elif study == "budgets_cpu":
        found = [claim4(per_run, amended)]
    else:
        return None
    return [Verdict(f"{v.claim}, amended A1", v.measured, v.verdict) for v in found] \
        if amended else found


def verdicts_a2(study: str, per_run: pd.DataFrame) -> list[Verdict]:
    """Claims 2 and 3 under amendments A1 and A2 ("<claim>, amended A1+A2"), once A2 has
    added a run; [] otherwise and for other studies."""
    if study != "claims_cpu" or not (
            (per_run["optimizer"] == "adam") & ~per_run["lr"].isin(ALPHAS23)).any():
        return []
    return [Verdict(f"{v.claim}, amended A1+A2", v.measured, v.verdict)
            for v in claims23(per_run, amended=True, a2=True)]


def untrained_text(per_run: pd.DataFrame) -> str:
    """The runs A1 leaves out, grouped by method, alpha and seed ("" when there are none)."""
    out = per_run[untrained(per_run)]
    groups = out.groupby(["optimizer", "decay", "lr", "epochs", "seed"], sort=True)
    return "; ".join(f"{o}/{d} alpha 2^{math.log2(lr):g}, {int(e)} epochs, seed {s}: {len(g)} "
                     f"run(s), validation error {_span(100 * g['val_error'])}%"
                     for (o, d, lr, e, s), g in groups)


def _span(values: pd.Series) -> str:
    low, high = f"{values.min():.1f}", f"{values.max():.1f}"
    return low if low == high else f"{low}-{high}"
