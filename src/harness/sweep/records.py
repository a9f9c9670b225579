"""A cell's rows in the record schema (`harness.spec.records`), built and written atomically.

`frame` is the one builder of rows: the cell's identity and hyperparameters (repeated on each
row), its final `status` and `error_message`, one row per `EpochMetrics` with the UTC
`timestamp` it was recorded at, the data it saw (`data_seen`: the fingerprint and source of
the dataset the cell was trained on) and provenance (git_sha: the commit of the harness code
itself, versions, device, CPU, GPU). A failed cell with no epoch has one row with epoch = 0 and
null metrics. `write_parquet` writes it in the spec's one Arrow schema
(`harness.spec.records.arrow_schema`) with `harness.fsutil.atomic_write`, so a reader never
sees a partial file.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import functools
import io
import json
import math
import os
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

import harness
from harness.config.job import Config
from harness.fsutil import atomic_write
from harness.spec.records import (
    COLUMNS,
    FLOAT_COLUMNS,
    METRIC_COLUMNS,
    NULLABLE_INTS,
    SCHEMA_VERSION,
    STATUSES,
    to_arrow,
)
from harness.train.loop import autocast_dtype

# The variables that would point git at another repository than the one asked for.
_GIT_LOCATORS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR",
                 "GIT_OBJECT_DIRECTORY", "GIT_CEILING_DIRECTORIES",
                 "GIT_DISCOVERY_ACROSS_FILESYSTEM")


@functools.cache
def git_sha() -> str | None:
    """The commit of the harness code that runs, whatever the working directory: HEAD of the
    git checkout that holds the imported package (its top level has src/harness/__init__.py,
    this very file), with '-dirty' when tracked files differ from it; else the commit an
    installed wheel was built from (harness/_build.json, written by setup.py); else None."""
    package = Path(harness.__file__).resolve().parent
    return _checkout_sha(package) or _built_sha(package)


def _checkout_sha(package: Path) -> str | None:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATORS}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(package), *args], capture_output=True,
                              text=True, timeout=10, check=True, env=env).stdout.strip()

    try:
        init = Path(git("rev-parse", "--show-toplevel")) / "src" / "harness" / "__init__.py"
        if not (init.is_file() and init.samefile(package / "__init__.py")):
            return None                     # an unrelated repository around site-packages
        # no index refresh: a harness killed mid-call must not leave .git/index.lock behind
        dirty = git("--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "HEAD") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _built_sha(package: Path) -> str | None:
    try:
        sha = json.loads((package / "_build.json").read_text())["git_sha"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return sha if isinstance(sha, str) and sha else None


@functools.cache
def harness_version() -> str | None:
    """The installed distribution's version (harness.__version__, from the package metadata of
    harness-wd); None when not installed."""
    return None if harness.__version__ == harness.UNKNOWN_VERSION else harness.__version__


@functools.cache
def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


@functools.cache
def gpu_model(device: str | None) -> str | None:
    """The CUDA device's model name (torch.cuda.get_device_name); None off CUDA."""
    if device is None or not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    try:
        return torch.cuda.get_device_name(torch.device(device)) or None
    except (RuntimeError, AssertionError, ValueError):
        return None


class DataSeen(NamedTuple):
    """What data a cell saw: `harness.train.data.Dataset.fingerprint` and `.source`."""

    fingerprint: str | None
    source: str | None


_DATA_SEEN: contextvars.ContextVar[DataSeen | None] = contextvars.ContextVar(
    "harness_data_seen", default=None)


@contextlib.contextmanager
def data_seen(seen: DataSeen | None) -> Iterator[None]:
    """Within this block `frame` records `seen` as the cells' data (the caller that trains a
    pack says once what data it holds; the recorder that writes the rows need not carry it).
    Reset on exit: nothing outlives the block."""
    token = _DATA_SEEN.set(seen)
    try:
        yield
    finally:
        _DATA_SEEN.reset(token)


def precision_used(cfg: Config, device: str | None) -> str | None:
    """bf16 | fp16 | fp32 as trained on `device`; None when auto and the device is unknown."""
    if device is None:
        return None if cfg.train.precision == "auto" else cfg.train.precision
    dtype = autocast_dtype(cfg.train.precision, torch.device(device))
    return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[dtype]


def now_utc() -> str:
    """The UTC time as ISO 8601 (what records store, so checkpoints keep plain strings)."""
    return dt.datetime.now(dt.UTC).isoformat()


def cell_values(cfg: Config, n_train: int | None, num_classes: int | None,
                device: str | None) -> dict[str, Any]:
    """The per-cell columns (status and error_message are added by `frame`)."""
    return {
        "run_id": cfg.run_id, "study": cfg.study, "dataset": cfg.dataset.name,
        "model": cfg.model.name, "optimizer": cfg.optimizer.name, "decay": cfg.decay.mode,
        "lr": cfg.optimizer.lr,
        "weight_decay_norm": cfg.decay.weight_decay if cfg.decay.normalized else None,
        "normalized": cfg.decay.normalized, "decay_exclude": list(cfg.decay.exclude),
        "schedule": cfg.schedule.name, "epochs": cfg.train.epochs,
        "batch_size": cfg.train.batch_size, "n_train": n_train,
        "val_split": cfg.dataset.val_split, "val_subset": cfg.dataset.val_subset,
        "num_classes": num_classes,
        "seed": cfg.seed, "precision": precision_used(cfg, device),
    }


def frame(cfg: Config, records: list[dict[str, Any]], status: str,
          error_message: str | None = None, *, n_train: int | None = None,
          num_classes: int | None = None, device: str | None = None,
          data: DataSeen | None = None) -> pd.DataFrame:
    """All rows of one cell as a DataFrame with exactly `COLUMNS`; `records` are
    `EpochMetrics` dicts, each with an optional ISO `timestamp` (default: now). `data`: the
    data the cell saw (default: the enclosing `data_seen`, else unknown)."""
    if status not in STATUSES:
        raise ValueError(f"status={status!r} is not valid; choose one of: {', '.join(STATUSES)}")
    configured = None if cfg.decay.normalized else cfg.decay.weight_decay
    rows = records or [dict.fromkeys(METRIC_COLUMNS, math.nan)
                       | {"epoch": 0, "step": 0, "weight_decay": configured}]
    seen = data if data is not None else _DATA_SEEN.get() or DataSeen(None, None)
    fixed = cell_values(cfg, n_train, num_classes, device) | {
        "schema_version": SCHEMA_VERSION, "status": status,
        "error_message": error_message or None, "data_fingerprint": seen.fingerprint,
        "data_source": seen.source, "git_sha": git_sha(),
        "harness_version": harness_version(), "torch_version": torch.__version__,
        "device": device, "cpu_model": cpu_model(), "cpu_threads": torch.get_num_threads(),
        "gpu_model": gpu_model(device)}
    stamp = now_utc()
    df = pd.DataFrame([fixed | {"timestamp": stamp} | row for row in rows], columns=COLUMNS)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True, format="ISO8601")
    return df.astype({"schema_version": "int64", "epoch": "int64", "step": "int64"}
                     | dict.fromkeys(FLOAT_COLUMNS, "float64")
                     | dict.fromkeys(NULLABLE_INTS, "Int64"))


def to_table(df: pd.DataFrame) -> pa.Table:
    """The Arrow table of `frame`'s rows in the spec's schema (`arrow_schema`): every column
    typed as it says, even when all null or empty, whatever pandas' string types."""
    return to_arrow(df)


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Serialise in memory, then `atomic_write`: a full disk is an OSError, the old file stays."""
    buf = io.BytesIO()
    pq.write_table(to_table(df), buf)
    data = buf.getvalue()
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
