"""Run cells so that a long sweep survives anything: skip done, claim, resume, record.

For each cell (`Config` with scalar lr and weight_decay) `run_cell`:
  1. skips it when `<results>/<study>/runs/<run_id>.parquet` says completed or diverged
     (`run.force=true` retrains);
  2. claims it with an exclusive `fcntl.flock` on `claims/<run_id>.lock`: a second process
     (on this machine or on a shared filesystem with locks) skips a claimed cell, and the
     kernel releases the lock of a process that dies, so stale claims are taken over at once;
  3. resumes from `checkpoints/<run_id>.pt` (model, optimizer, schedule, RNG states, records;
     written atomically every `train.checkpoint_every` epochs, loaded with weights_only=True);
  4. trains (harness.train), mirroring each epoch to W&B, and writes the parquet file
     atomically with status completed | diverged | failed; an exception in a cell is recorded
     as failed with its message and the sweep goes on. The checkpoint is removed at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import socket
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from harness import data as data_mod
from harness.config import Config, ConfigError
from harness.records import WandbSink, frame, read_status, write_parquet
from harness.train import resolve_device, train

DONE = ("completed", "diverged")


@dataclasses.dataclass(frozen=True)
class CellPaths:
    parquet: Path
    checkpoint: Path
    claim: Path
    wandb: Path

    @classmethod
    def of(cls, cfg: Config) -> CellPaths:
        study = Path(cfg.run.results_dir) / cfg.study
        wandb = Path(cfg.logger.wandb_dir) if cfg.logger.wandb_dir else study / "wandb"
        return cls(parquet=study / "runs" / f"{cfg.run_id}.parquet",
                   checkpoint=study / "checkpoints" / f"{cfg.run_id}.pt",
                   claim=study / "claims" / f"{cfg.run_id}.lock", wandb=wandb)


@contextlib.contextmanager
def claim(path: Path) -> Iterator[bool]:
    """Hold an exclusive, non-blocking lock on `path`; yield False if another process has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode())
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file in the same directory, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint, or None if absent; an unreadable one is reported and ignored."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - retrain from scratch rather than crash
        print(f"warning: ignoring unreadable checkpoint {path}: {err}", file=sys.stderr)
        return None


_DATA: dict[tuple, data_mod.Dataset] = {}


def dataset_for(cfg: Config, device: torch.device) -> data_mod.Dataset:
    """Load each dataset once per process and device."""
    d = cfg.dataset
    key = (d, str(device))
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = data_mod.load_dataset(
            d.name, root=d.root, path=d.path, download=d.download,
            train_subset=d.train_subset, test_subset=d.test_subset, device=device)
    ds = _DATA[key]
    if cfg.train.batch_size > ds.n_train:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is larger than the "
                          f"training set ({ds.n_train} images); choose at most {ds.n_train}")
    return ds


def _label(cfg: Config) -> str:
    return (f"{cfg.run_id} {cfg.optimizer.name}/{cfg.decay.mode} lr={cfg.optimizer.lr:.4g} "
            f"wd={cfg.decay.weight_decay:.4g} seed={cfg.seed}")


def _line(cfg: Config, m: dict[str, float]) -> str:
    return (f"[{_label(cfg)}] epoch {m['epoch']}/{cfg.train.epochs} "
            f"loss {m['train_loss']:.4f} train_err {100 * m['train_error']:.2f}% "
            f"test_err {100 * m['test_error']:.2f}% {m['images_per_s']:.0f} img/s")


def _show_bar(cfg: Config) -> bool:
    mode = cfg.logger.progress
    return mode == "bar" or (mode == "auto" and sys.stderr.isatty())


def _train_cell(cfg: Config, resolved: dict[str, Any], paths: CellPaths) -> str:
    device = resolve_device(cfg.train.device)
    resume = None if cfg.run.force else load_checkpoint(paths.checkpoint)
    records: list[dict[str, float]] = list(resume["records"]) if resume else []
    if resume:
        print(f"[{_label(cfg)}] resuming after epoch {resume['epoch']}")
    ds, status, error = None, "completed", ""
    sink = WandbSink(cfg, resolved, paths.wandb)
    try:
        ds = dataset_for(cfg, device)
        for epoch in train(cfg, ds, device, resume=resume, progress=_show_bar(cfg)):
            m = dataclasses.asdict(epoch.metrics)
            records.append(m)
            sink.log(m)
            if cfg.logger.progress != "none":
                print(_line(cfg, m), flush=True)
            if epoch.diverged:
                status = "diverged"
                break
            every = cfg.train.checkpoint_every
            if every and m["epoch"] % every == 0 and m["epoch"] < cfg.train.epochs:
                save_checkpoint(epoch.state() | {"records": records}, paths.checkpoint)
    except ConfigError:
        sink.finish("failed")
        raise
    except Exception as err:  # noqa: BLE001 - a failing cell must not stop the sweep
        if type(err).__module__.startswith("submitit"):  # job preempted or timed out:
            sink.finish("failed")                        # keep the checkpoint for the requeue
            raise
        status, error = "failed", f"{type(err).__name__}: {err}"
        print(f"[{_label(cfg)}] failed: {error}\n{traceback.format_exc()}", file=sys.stderr)
    n_train = ds.n_train if ds is not None else 0
    num_classes = ds.num_classes if ds is not None else 0
    write_parquet(frame(cfg, n_train, num_classes, str(device), records, status, error),
                  paths.parquet)
    sink.finish(status)
    paths.checkpoint.unlink(missing_ok=True)
    return status


def run_cell(cfg: Config, resolved: dict[str, Any]) -> str:
    """Run one cell; return completed | diverged | failed | skipped | claimed | planned | done."""
    paths = CellPaths.of(cfg)
    done = read_status(paths.parquet) in DONE
    if cfg.run.plan:
        return "done" if done else "planned"
    if done and not cfg.run.force:
        print(f"[{_label(cfg)}] skipped: already {read_status(paths.parquet)} "
              f"({paths.parquet}); run.force=true retrains")
        return "skipped"
    with claim(paths.claim) as mine:
        if not mine:
            print(f"[{_label(cfg)}] skipped: claimed by another process ({paths.claim})")
            return "claimed"
        if read_status(paths.parquet) in DONE and not cfg.run.force:
            return "skipped"  # finished by another process while we waited
        return _train_cell(cfg, resolved, paths)


def run_cells(cells: list[Config], resolved: dict[str, Any]) -> dict[str, str]:
    """Run the cells of one job in order; returns {run_id: outcome}."""
    return {c.run_id: run_cell(c, resolved) for c in cells}
