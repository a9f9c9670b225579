"""Run cells so that a long sweep survives anything: skip done, claim, resume, record.

Cells that differ only in lr and weight_decay are trained K at a time as one pack
(`train.pack`, harness.train); each keeps its own claim, checkpoint, parquet file and status.
For each cell (`Config` with scalar lr and weight_decay) `run_cells`:
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
from harness import packed
from harness.config import Config, ConfigError
from harness.records import WandbSink, frame, read_status, write_parquet
from harness.train import Epoch, autocast_dtype, resolve_device, train

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


def pack_key(cfg: Config) -> Config:
    """Cells with equal keys can share a pack: everything equal but lr and weight_decay."""
    return dataclasses.replace(cfg, optimizer=dataclasses.replace(cfg.optimizer, lr=1.0),
                               decay=dataclasses.replace(cfg.decay, weight_decay=0.0),
                               run=dataclasses.replace(cfg.run, worker=0))


def pack_size(cfg: Config, ds: data_mod.Dataset, device: torch.device) -> int:
    """train.pack as a number: `auto` measures what fits in free device memory."""
    if cfg.train.pack != "auto":
        return int(cfg.train.pack)
    shape = packed.StepShape(cfg.model.name, ds.num_classes, ds.in_channels, ds.image_size,
                             cfg.train.batch_size, cfg.optimizer.name,
                             autocast_dtype(cfg.train.precision, device))
    return packed.max_pack(shape, device)


@dataclasses.dataclass
class _Cell:
    cfg: Config
    paths: CellPaths
    sink: WandbSink
    records: list[dict[str, float]]
    status: str = "completed"
    error: str = ""


def _train_pack(cells: list[_Cell], resumes: list[dict] | None, device: torch.device) -> None:
    """Train one pack, checkpointing each cell; statuses and records land in `cells`."""
    ds = dataset_for(cells[0].cfg, device)
    every = cells[0].cfg.train.checkpoint_every
    for epochs in train([c.cfg for c in cells], ds, device, resume=resumes,
                        progress=_show_bar(cells[0].cfg)):
        for cell, epoch in zip(cells, epochs, strict=True):
            if epoch is not None:
                _record(cell, epoch, every, device)


def _record(cell: _Cell, epoch: Epoch, every: int, device: torch.device) -> None:
    m = dataclasses.asdict(epoch.metrics)
    cell.records.append(m)
    cell.sink.log(m)
    if cell.cfg.logger.progress != "none":
        print(_line(cell.cfg, m), flush=True)
    if epoch.diverged:  # its record is final now, whatever happens to the rest of the pack
        cell.status = "diverged"
        _finish(cell, device)
    elif every and m["epoch"] % every == 0 and m["epoch"] < cell.cfg.train.epochs:
        save_checkpoint(epoch.state() | {"records": cell.records}, cell.paths.checkpoint)


def _finish(cell: _Cell, device: torch.device) -> str:
    ds = _DATA.get((cell.cfg.dataset, str(device)))
    n_train, num_classes = (ds.n_train, ds.num_classes) if ds is not None else (0, 0)
    write_parquet(frame(cell.cfg, n_train, num_classes, str(device), cell.records,
                        cell.status, cell.error), cell.paths.parquet)
    cell.sink.finish(cell.status)
    cell.paths.checkpoint.unlink(missing_ok=True)
    return cell.status


def _run_pack(cfgs: list[Config], resolved: dict[str, Any], device: torch.device,
              resumes: list[dict | None]) -> dict[str, str]:
    """Train cfgs (claimed, same checkpoint epoch) as one pack and write each cell's parquet."""
    cells = []
    for cfg, resume in zip(cfgs, resumes, strict=True):
        if resume:
            print(f"[{_label(cfg)}] resuming after epoch {resume['epoch']}")
        paths = CellPaths.of(cfg)
        records = list(resume["records"]) if resume else []
        cells.append(_Cell(cfg, paths, WandbSink(cfg, resolved, paths.wandb), records))
    try:
        _train_pack(cells, None if resumes[0] is None else resumes, device)
    except ConfigError:
        for cell in cells:
            cell.sink.finish("failed")
        raise
    except Exception as err:  # noqa: BLE001 - a failing cell must not stop the sweep
        if type(err).__module__.startswith("submitit"):  # job preempted or timed out:
            for cell in cells:                           # keep checkpoints for the requeue
                cell.sink.finish("failed")
            raise
        error = f"{type(err).__name__}: {err}"
        print(f"[{_label(cfgs[0])}] failed: {error}\n{traceback.format_exc()}", file=sys.stderr)
        for cell in cells:
            if cell.status != "diverged":
                cell.status, cell.error = "failed", error
    return {cell.cfg.run_id: cell.status if cell.status == "diverged" else _finish(cell, device)
            for cell in cells}


def _precheck(cfg: Config) -> str | None:
    """planned | done | skipped for a cell that needs no training now, else None."""
    status = read_status(CellPaths.of(cfg).parquet)
    if cfg.run.plan:
        return "done" if status in DONE else "planned"
    if status in DONE and not cfg.run.force:
        print(f"[{_label(cfg)}] skipped: already {status} ({CellPaths.of(cfg).parquet}); "
              "run.force=true retrains")
        return "skipped"
    return None


def _claimed_packs(group: list[Config], size: int, stack: contextlib.ExitStack,
                   outcomes: dict[str, str]) -> list[tuple[list[Config], list[dict | None]]]:
    """Claim up to `size` cells of `group`, then split them by the epoch they resume from."""
    mine: list[Config] = []
    for cfg in group:
        if len(mine) == size:
            break
        if cfg.run_id in outcomes:
            continue
        paths = CellPaths.of(cfg)
        if not stack.enter_context(claim(paths.claim)):
            print(f"[{_label(cfg)}] skipped: claimed by another process ({paths.claim})")
            outcomes[cfg.run_id] = "claimed"
        elif read_status(paths.parquet) in DONE and not cfg.run.force:
            outcomes[cfg.run_id] = "skipped"  # finished by another process meanwhile
        else:
            mine.append(cfg)
    by_epoch: dict[int, list[tuple[Config, dict | None]]] = {}
    for cfg in mine:
        resume = None if cfg.run.force else load_checkpoint(CellPaths.of(cfg).checkpoint)
        by_epoch.setdefault(resume["epoch"] if resume else 0, []).append((cfg, resume))
    return [([c for c, _ in pairs], [r for _, r in pairs]) for pairs in by_epoch.values()]


def run_cells(cells: list[Config], resolved: dict[str, Any]) -> dict[str, str]:
    """Run the cells of one job, K at a time; returns {run_id: outcome}, outcome one of
    completed | diverged | failed | skipped | claimed | planned | done."""
    outcomes = {c.run_id: o for c in cells if (o := _precheck(c)) is not None}
    groups: dict[Config, list[Config]] = {}
    for cfg in cells:
        if cfg.run_id not in outcomes:
            groups.setdefault(pack_key(cfg), []).append(cfg)
    for group in groups.values():
        device = resolve_device(group[0].train.device)
        try:
            size = pack_size(group[0], dataset_for(group[0], device), device)
        except ConfigError:
            raise
        except Exception:  # noqa: BLE001 - the data error is recorded per cell below
            size = 1
        while any(c.run_id not in outcomes for c in group):
            with contextlib.ExitStack() as stack:
                for pack, resumes in _claimed_packs(group, size, stack, outcomes):
                    outcomes |= _run_pack(pack, resolved, device, resumes)
    return outcomes

