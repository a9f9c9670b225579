"""Planted studies for the analysis and report tests, written through `harness.sweep.records.frame`.

A planted surface gives each cell's final top-1 test error (a fraction):

    error(alpha, lambda) = BASE + A*(log2 lambda - log2 lambda*(alpha))^2 + B*(log2 alpha - c)^2,
    log2 lambda*(alpha) = k0 + s*log2 alpha      (s = 0: separable, s = -1: coupled)

plus Gaussian noise per seed. Every row goes through `records.frame`, so the tests read the
parquet schema the runner writes, not one built by hand.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import numpy as np
import pandas as pd

from harness.config import compose
from harness.config.job import Config
from harness.sweep import records

BASE, A, B = 0.05, 0.01, 0.004
N_TRAIN, CLASSES = 5000, 10


def surface(alpha: float, lam: float, s: float, k0: float, c: float) -> float:
    """The planted final test error (fraction), capped below chance."""
    la = math.log2(alpha)
    return min(0.85, BASE + A * (math.log2(lam) - (k0 + s * la)) ** 2 + B * (la - c) ** 2)


def config(*, lr: float, lam: float, optimizer: str = "sgd", decay: str = "decoupled",
           seed: int = 0, epochs: int = 3, normalized: bool = False,
           study: str = "planted", schedule: str | None = None) -> Config:
    base = _base(optimizer, decay, epochs, schedule)
    return dataclasses.replace(
        base, study=study, seed=seed,
        optimizer=dataclasses.replace(base.optimizer, lr=lr),
        decay=dataclasses.replace(base.decay, weight_decay=lam, normalized=normalized))


@functools.cache
def _base(optimizer: str, decay: str, epochs: int, schedule: str | None = None) -> Config:
    """One cell of fashion_mnist as configs/ gives it (composed once per kind; ``schedule``:
    a configs/schedule group other than the default)."""
    (cfg,) = compose.cells([*([f"schedule={schedule}"] if schedule else []),
        "dataset=fashion_mnist", f"dataset.train_subset={N_TRAIN}", "model=small",
        f"optimizer={optimizer}",
        f"decay={decay}", f"train.epochs={epochs}", "train.batch_size=64", "logger=none"])
    return cfg


def cell_frame(final: float, *, status: str = "completed", val: float | None = None,
               num_classes: int | None = CLASSES, **kw) -> pd.DataFrame:
    """One cell's rows via `records.frame`: test error falls to ``final`` at the last epoch
    (NaN there if diverged; no epoch at all if failed). ``val``: the final error on a held-out
    validation split (dataset.val_split=0.1), recorded as val_error."""
    cfg = config(**kw)
    if val is not None:
        cfg = dataclasses.replace(cfg, dataset=dataclasses.replace(cfg.dataset, val_split=0.1))
    lam = cfg.decay.weight_decay
    wd = lam * math.sqrt(64 / (N_TRAIN * cfg.train.epochs)) if cfg.decay.normalized else lam
    n = 0 if status == "failed" else cfg.train.epochs
    metrics = []
    for e in range(1, n + 1):
        err = final + 0.3 * math.exp(-(e - 1.0)) * (e < n)
        err = math.nan if status == "diverged" and e == n else err
        metrics.append({"epoch": e, "step": 79 * e, "lr_multiplier": 1.0, "weight_decay": wd,
                        "train_loss": 2.0 * math.exp(-0.5 * e), "train_error": err,
                        "test_loss": 2 * err, "test_error": err, "test_error_top5": err / 3,
                        "val_loss": math.nan if val is None else 2 * (val + err - final),
                        "val_error": math.nan if val is None else val + err - final,
                        "param_norm": 30.0, "elapsed_s": 10.0 * e, "images_per_s": 500.0})
    df = records.frame(cfg, metrics, status,
                       "CUDA out of memory" if status == "failed" else None,
                       n_train=N_TRAIN, num_classes=num_classes, device="cpu")
    return df


def write(run_dir: Path, df: pd.DataFrame) -> str:
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = str(df["run_id"].iloc[0])
    records.write_parquet(df, run_dir / f"{run_id}.parquet")
    return run_id


def surface_frames(alphas: list[float], lams: list[float], s: float, k0: float, c: float,
                   noise: float = 0.0, seeds: int = 1, rng: int = 0, **kw) -> list[pd.DataFrame]:
    """Every (alpha, lambda, seed) cell of a planted surface with noise (fraction) per seed."""
    gen = np.random.default_rng(rng)
    return [cell_frame(surface(a, m, s, k0, c) + noise * gen.standard_normal(), lr=a, lam=m,
                       seed=seed, **kw)
            for a in alphas for m in lams for seed in range(seeds)]


def write_surface(run_dir: Path, *args, **kw) -> None:
    for df in surface_frames(*args, **kw):
        write(run_dir, df)
