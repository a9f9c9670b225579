"""One record schema for every sink: a cell's parquet file (the source of truth) and W&B.

A cell's parquet file `<results>/<study>/runs/<run_id>.parquet` has one row per trained
epoch and the columns `COLUMNS`: the cell's identity and hyperparameters (repeated on each
row), its final `status` (completed | diverged | failed) and `error_message`, the epoch's
`EpochMetrics`, and provenance. A failed cell with no epoch has one row with epoch = 0 and NaN
metrics. Files are written atomically (temporary file + `os.replace`), so a reader never sees
a partial file. W&B mirrors the same rows (project, group = study, id = run_id, config =
resolved config); any W&B failure is a warning, never a failed run.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import torch

import harness
from harness.config import Config
from harness.train import EpochMetrics

STATUSES = ("completed", "diverged", "failed")
METRIC_COLUMNS = [f.name for f in dataclasses.fields(EpochMetrics)]
CELL_COLUMNS = [
    "run_id", "study", "status", "error_message", "dataset", "model", "optimizer", "decay",
    "lr", "weight_decay_norm", "normalized", "decay_exclude", "schedule", "epochs",
    "batch_size", "n_train", "num_classes", "seed", "precision",
]
PROVENANCE_COLUMNS = ["git_sha", "harness_version", "torch_version", "device"]
COLUMNS = CELL_COLUMNS + METRIC_COLUMNS + PROVENANCE_COLUMNS


@functools.cache
def git_sha() -> str:
    """HEAD of the harness checkout, with '-dirty' when tracked files differ from it."""
    root = Path(harness.__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout
        return sha + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cell_values(cfg: Config, n_train: int, num_classes: int) -> dict[str, Any]:
    """The per-cell columns (status and error_message are added by `frame`)."""
    return {
        "run_id": cfg.run_id, "study": cfg.study, "dataset": cfg.dataset.name,
        "model": cfg.model.name, "optimizer": cfg.optimizer.name, "decay": cfg.decay.mode,
        "lr": cfg.optimizer.lr,
        "weight_decay_norm": cfg.decay.weight_decay if cfg.decay.normalized else math.nan,
        "normalized": cfg.decay.normalized, "decay_exclude": ",".join(cfg.decay.exclude),
        "schedule": cfg.schedule.name, "epochs": cfg.train.epochs,
        "batch_size": cfg.train.batch_size, "n_train": n_train, "num_classes": num_classes,
        "seed": cfg.seed, "precision": cfg.train.precision,
    }


def frame(cfg: Config, n_train: int, num_classes: int, device: str,
          metrics: list[dict[str, float]], status: str, error_message: str = "") -> pd.DataFrame:
    """All rows of one cell as a DataFrame with exactly `COLUMNS`."""
    if status not in STATUSES:
        raise ValueError(f"status={status!r} is not valid; choose one of: {', '.join(STATUSES)}")
    configured = math.nan if cfg.decay.normalized else cfg.decay.weight_decay
    rows = metrics or [dict.fromkeys(METRIC_COLUMNS, math.nan)
                       | {"epoch": 0, "step": 0, "weight_decay": configured}]
    fixed = cell_values(cfg, n_train, num_classes) | {
        "status": status, "error_message": error_message, "git_sha": git_sha(),
        "harness_version": harness.__version__, "torch_version": torch.__version__,
        "device": device}
    df = pd.DataFrame([fixed | row for row in rows], columns=COLUMNS)
    return df.astype({"epoch": "int64", "step": "int64"})


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write atomically: a temporary file in the same directory, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_status(path: Path) -> str | None:
    """The status recorded in a cell's parquet file; None if absent or unreadable."""
    try:
        return str(pd.read_parquet(path, columns=["status"])["status"].iloc[0])
    except Exception:  # noqa: BLE001 - a corrupt file means "not done"
        return None


class WandbSink:
    """Mirror one cell's records to W&B; every failure becomes one warning and disables it."""

    def __init__(self, cfg: Config, resolved: dict[str, Any], wandb_dir: Path) -> None:
        self.run = None
        if cfg.logger.wandb_mode == "disabled":
            return
        try:
            import wandb

            wandb_dir.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(
                project=cfg.logger.wandb_project, entity=cfg.logger.wandb_entity,
                group=cfg.study, id=cfg.run_id, name=f"{cfg.optimizer.name}-{cfg.decay.mode}"
                f"-lr{cfg.optimizer.lr:.3g}-wd{cfg.decay.weight_decay:.3g}-s{cfg.seed}",
                config=resolved, tags=[cfg.optimizer.name, cfg.decay.mode],
                mode=cfg.logger.wandb_mode, dir=str(wandb_dir), resume="allow",
                reinit="finish_previous", settings=wandb.Settings(silent=True))
        except Exception as err:  # noqa: BLE001 - W&B never fails a run
            self._warn(err)

    def _warn(self, err: BaseException) -> None:
        warnings.warn(f"W&B logging disabled for this cell: {type(err).__name__}: {err}",
                      stacklevel=3)
        self.run = None

    def log(self, metrics: dict[str, float]) -> None:
        if self.run is not None:
            try:
                self.run.log(dict(metrics), step=int(metrics["epoch"]))
            except Exception as err:  # noqa: BLE001
                self._warn(err)

    def finish(self, status: str) -> None:
        if self.run is not None:
            try:
                self.run.summary["status"] = status
                self.run.finish(exit_code=0 if status != "failed" else 1)
            except Exception as err:  # noqa: BLE001
                self._warn(err)
