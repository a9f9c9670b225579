"""Schedule cells so that a long sweep survives anything: skip done, claim, resume, pack.

Cells that differ only in lr and weight_decay are trained K at a time as one pack
(`train.pack`, harness.train.loop); each keeps its own claim and its own outputs
(`harness.sweep.recorder.Recorder`: records, checkpoint, parquet, W&B mirror, status).
For each cell (`Config` with scalar lr and weight_decay) `run_cells`:
  1. skips it when `<results>/<study>/runs/<run_id>.parquet` is a completed or diverged
     record of this very cell (its run_id, epochs 1..T) trained on the data there is now
     (`DataNow`: its recorded data_fingerprint equals the data's; a file written before the
     column existed, or with it null, counts as matching, since what it saw is unknown);
     `run.force=true` retrains, once per forced command even if it is killed and rerun
     (harness.sweep.force);
  2. claims it with an exclusive `fcntl.flock` on `claims/<run_id>.lock` (opened with
     O_NOFOLLOW): a second process (on this machine or on a shared filesystem with locks)
     skips a claimed cell, and the kernel releases the lock of a process that dies;
  3. resumes from its validated checkpoint (harness.sweep.checkpoint; under run.force only one
     that force wrote); one that fails validation, cannot be loaded into the model, or was
     trained on other data (the checkpoint holds the data's fingerprint; an older one without
     it resumes), is reported in one line and the cell retrains;
  4. trains (harness.train.loop) and records it; an exception in a cell is recorded as failed with
     its message and the sweep goes on (submitit's preemption is re-raised, checkpoints kept).
All cells of one call share one `WandbMirror` (the caller's, else a new one): W&B is tried
until its first failure, then left alone for the rest of the command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import socket
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import torch

from harness import stops
from harness.config.job import Config
from harness.config.validate import ConfigError, check_batch_size
from harness.sweep.force import Force, begin
from harness.sweep.recorder import DONE, CellPaths, Recorder, WandbMirror, label, tidy
from harness.sweep.records import DataSeen, data_seen
from harness.train import data as data_mod
from harness.train import memory
from harness.train.loop import Epoch, ResumeError, autocast_dtype, resolve_device, train

DATA_KEY = "data_fingerprint"  # in a checkpoint's state: the data its epochs were trained on


class ClaimError(OSError):
    """A claim file that cannot be opened safely (a symlink, no permission)."""


@contextlib.contextmanager
def claim(path: Path) -> Iterator[bool]:
    """Hold an exclusive, non-blocking lock on `path`; yield False if another process has it.
    The file is opened without following symlinks (ClaimError if it is one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as err:
        why = "is a symlink" if path.is_symlink() else (err.strerror or str(err))
        raise ClaimError(f"claim file {path} {why}; remove it") from None
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


class DataNow:
    """The fingerprint of the data each dataset config gives now, read once per command and
    only when a finished record is to be compared with it (`load_data` tells it what it loaded,
    so a group's data is not read twice for it)."""

    def __init__(self) -> None:
        self._seen: dict[object, str | None] = {}

    def known(self, cfg: Config, fingerprint: str | None) -> None:
        self._seen[cfg.dataset] = fingerprint

    def fingerprint(self, cfg: Config) -> str | None:
        """The fingerprint now; None when the data cannot be read now (nothing is downloaded
        for it): then a finished record cannot be compared and counts as matching (the data
        check before any cell, or the cell's own load, says what is wrong with the data)."""
        if cfg.dataset not in self._seen:
            d = cfg.dataset
            try:
                self._seen[d] = data_mod.identify(
                    d.name, root=d.root, path=d.path, download=False,
                    train_subset=d.train_subset, test_subset=d.test_subset,
                    val_split=d.val_split, val_subset=d.val_subset)[0]
            except Exception:  # noqa: BLE001 - unreadable now: cannot tell, see above
                self._seen[d] = None
        return self._seen[cfg.dataset]


def done_status(cfg: Config, quiet: bool = False, data: DataNow | None = None) -> str | None:
    """completed | diverged if the cell's parquet file is a final record of this cell; else
    None, with one line (unless quiet) when the file exists but is not such a record. With
    `data`, a record whose data_fingerprint differs from the data's now is not final either
    (a record without one, written before the column existed or with it null, matches)."""
    path = CellPaths.of(cfg).parquet
    try:
        df = pd.read_parquet(path)
        status, run_id = str(df["status"].iloc[0]), str(df["run_id"].iloc[0])
        epochs = [int(e) for e in df["epoch"]]
        recorded = df["data_fingerprint"].dropna() if "data_fingerprint" in df else ()
        recorded = str(recorded.iloc[-1]) if len(recorded) else None
    except FileNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001 - unreadable: retrain and overwrite it
        if not quiet:
            print(f"warning: {path} is unreadable ({type(err).__name__}); the cell is retrained")
        return None
    whole = epochs == list(range(1, len(epochs) + 1)) and \
        (status == "diverged" or len(epochs) == cfg.train.epochs)
    foreign = run_id != cfg.run_id or (status in DONE and not whole)
    if foreign or status not in DONE:
        if foreign and not quiet:
            print(f"warning: {path} is not a final record of run {cfg.run_id} (run_id "
                  f"{run_id}, status {status}, epochs {epochs[:3]}...); the cell is retrained")
        return None
    now = data.fingerprint(cfg) if data is not None and recorded is not None else None
    if now is not None and now != recorded:
        if not quiet:
            print(f"[{label(cfg)}] {path} was trained on other data ({recorded[:19]}..., "
                  f"now {now[:19]}...); the cell is retrained")
        return None
    return status


def _skips(cfg: Config, force: Force | None, quiet: bool = False,
           data: DataNow | None = None) -> str | None:
    """done_status of a cell this command does not train: any final one, or under run.force
    one that this force already retrained (its parquet is newer than the force's mark)."""
    status = done_status(cfg, quiet, data)
    if status not in DONE or not cfg.run.force:
        return status
    return status if force is not None and force.covers(CellPaths.of(cfg).parquet) else None


def _show_bar(cfg: Config) -> bool:
    mode = cfg.logger.progress
    return mode == "bar" or (mode == "auto" and sys.stderr.isatty())


def pack_key(cfg: Config) -> Config:
    """Cells with equal keys can share a pack: everything equal but lr and weight_decay."""
    return dataclasses.replace(cfg, optimizer=dataclasses.replace(cfg.optimizer, lr=1.0),
                               decay=dataclasses.replace(cfg.decay, weight_decay=0.0),
                               run=dataclasses.replace(cfg.run, worker=0))


def pack_k(cfg: Config, ds: data_mod.Dataset, device: torch.device, cells: int) -> int:
    """train.pack as a number for a group of `cells`: `auto` is 1 on a CPU and what fits in
    free device memory on a GPU (memory.resolve_pack), never more than the group."""
    shape = memory.StepShape(cfg.model.name, ds.num_classes, ds.in_channels, ds.image_size,
                             cfg.train.batch_size, cfg.optimizer.name, cfg.optimizer.hyper,
                             autocast_dtype(cfg.train.precision, device))
    return memory.resolve_pack(cfg.train.pack, shape, device, cells)


def _show_plan(cells: list[Config], outcomes: dict[str, str]) -> None:
    """One line per pack group of the cells still to train: how many, in packs of which K."""
    groups: dict[Config, list[Config]] = {}
    for cfg in cells:
        if outcomes.get(cfg.run_id) == "planned":
            groups.setdefault(pack_key(cfg), []).append(cfg)
    for group in groups.values():
        cfg, device = group[0], resolve_device(group[0].train.device)
        print(f"plan: {len(group)} cells of {cfg.optimizer.name}/{cfg.decay.mode} to train in "
              f"packs of {_plan_k(cfg, device, len(group))} on {device} "
              f"(train.pack={cfg.train.pack})", flush=True)


def _plan_k(cfg: Config, device: torch.device, cells: int) -> int | str:
    """pack_k for a plan, which needs no data and downloads nothing: only train.pack=auto on
    a GPU reads the data (the probe needs its image shape); without it, what K depends on."""
    if str(cfg.train.pack) != "auto" or device.type != "cuda":
        return memory.resolve_pack(cfg.train.pack, None, device, cells)  # type: ignore[arg-type]
    try:
        ds = load_data(dataclasses.replace(
            cfg, dataset=dataclasses.replace(cfg.dataset, download=False)), device)
    except Exception:  # noqa: BLE001 - missing data: the plan says how to get it
        return "K (the memory probe's, once the data is there)"
    return pack_k(cfg, ds, device, cells)


def load_data(cfg: Config, device: torch.device) -> data_mod.Dataset:
    d = cfg.dataset
    ds = data_mod.load_dataset(d.name, root=d.root, path=d.path, download=d.download,
                               train_subset=d.train_subset, test_subset=d.test_subset,
                               val_split=d.val_split, val_subset=d.val_subset,
                               device=device)
    check_batch_size(cfg.train.batch_size, ds.n_train)
    return ds


def _train(recs: list[Recorder], resumes: list[dict | None], ds: data_mod.Dataset,
           device: torch.device) -> None:
    """Train one pack; a resume that cannot be loaded retrains (cell by cell in a pack)."""
    try:
        for epochs in train([r.cfg for r in recs], ds, device,
                            resume=None if resumes[0] is None else resumes,
                            progress=_show_bar(recs[0].cfg)):
            for rec, epoch in zip(recs, epochs, strict=True):
                if epoch is not None:
                    rec.epoch(_with_data(epoch, ds.fingerprint))
    except ResumeError as err:  # raised by setup, before any epoch
        if len(recs) > 1:
            for rec, resume in zip(recs, resumes, strict=True):
                _train([rec], [resume], ds, device)
            return
        recs[0].restart(str(err))
        _train(recs, [None], ds, device)


def _with_data(epoch: Epoch, fingerprint: str | None) -> Epoch:
    """`epoch` whose checkpoint state also names the data it was trained on."""
    state = epoch.state
    return dataclasses.replace(epoch, state=lambda: state() | {DATA_KEY: fingerprint})


def _same_data(rec: Recorder, resume: dict | None, ds: data_mod.Dataset | None) -> dict | None:
    """`resume`, unless its checkpoint was trained on other data than `ds` (then None: the
    cell retrains, said in one line); a checkpoint without a fingerprint resumes."""
    seen = resume.get(DATA_KEY) if resume is not None else None
    if seen is None or ds is None or ds.fingerprint in (None, seen):
        return resume
    rec.restart(f"it was trained on other data ({seen[:19]}..., now {ds.fingerprint[:19]}...)")
    return None


def _preempted(err: Exception) -> bool:
    """submitit's UncompletedJobError: its signal handler raises it in the middle of training
    when the job is preempted or timed out and will not be requeued. submitit is an optional
    dependency, not imported here: an error of its type exists only once it is loaded."""
    utils = sys.modules.get("submitit.core.utils")
    return utils is not None and isinstance(err, utils.UncompletedJobError)


def _fail(recs: list[Recorder], err: Exception, with_traceback: bool) -> None:
    """Mark the cells of a pack failed with `err`, said in one line (+ the traceback while
    handling it, unless the error is the data's, already one line)."""
    error = f"{type(err).__name__}: {err}" if with_traceback else str(err)
    tb = "\n" + traceback.format_exc() if with_traceback else ""
    print(f"[{label(recs[0].cfg)}] failed: {error}{tb}", file=sys.stderr)
    for rec in recs:
        rec.fail(error)


def _run_pack(cfgs: list[Config], ds: data_mod.Dataset | None, data_error: str | None,
              device: torch.device, mirror: WandbMirror, force: Force | None) -> dict[str, str]:
    """Train cfgs (claimed) as one pack and record each cell, with the data it saw."""
    seen = DataSeen(ds.fingerprint, ds.source) if ds is not None else None
    with data_seen(seen):
        return _train_and_record(cfgs, ds, data_error, device, mirror, force)


def _train_and_record(cfgs: list[Config], ds: data_mod.Dataset | None,
                      data_error: str | None, device: torch.device, mirror: WandbMirror,
                      force: Force | None) -> dict[str, str]:
    info = {"n_train": ds.n_train, "num_classes": ds.num_classes} if ds is not None else {}
    recs = [Recorder(cfg, str(device), mirror, **info) for cfg in cfgs]
    by_epoch: dict[int, list[tuple[Recorder, dict | None]]] = {}
    for rec in recs:
        resume = _same_data(rec, rec.resume(force), ds)
        by_epoch.setdefault(resume["epoch"] if resume else 0, []).append((rec, resume))
    outcomes: dict[str, str] = {}
    for pairs in by_epoch.values():
        try:
            if ds is None:
                raise RuntimeError(data_error)
            _train([r for r, _ in pairs], [s for _, s in pairs], ds, device)
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - a failing cell must not stop the sweep
            if _preempted(err) or stops.stopped():  # keep the checkpoints for the rerun
                raise  # (an error raised over a signal's exception is the signal's)
            _fail([r for r, _ in pairs], err, with_traceback=ds is not None)
        # recorded now, not after the pack's other groups: a later preemption loses nothing
        outcomes |= {rec.cfg.run_id: rec.finish() for rec, _ in pairs}
    return outcomes


def _precheck(cfg: Config, mirror: WandbMirror, force: Force | None,
              data: DataNow) -> str | None:
    """planned | done | skipped for a cell that needs no training now, else None."""
    if cfg.run.plan:
        return "done" if done_status(cfg, data=data) in DONE else "planned"
    status = _skips(cfg, force, data=data)
    if status in DONE:
        paths = CellPaths.of(cfg)
        why = f"retrained by this run.force ({force.path})" if force else \
            "run.force=true retrains"
        print(f"[{label(cfg)}] skipped: already {status} ({paths.parquet}); {why}")
        with claim(paths.claim) as mine:
            if mine:  # a kill between the parquet and the tidying left work behind
                tidy(cfg, paths, mirror)
        return "skipped"
    return None


def _claim_pack(group: list[Config], size: int, stack: contextlib.ExitStack,
                outcomes: dict[str, str], mirror: WandbMirror,
                force: Force | None, data: DataNow) -> list[Config]:
    """Claim up to `size` cells of `group` that nobody has trained yet."""
    mine: list[Config] = []
    for cfg in group:
        if len(mine) == size:
            break
        if cfg.run_id in outcomes:
            continue
        paths = CellPaths.of(cfg)
        try:
            ok = stack.enter_context(claim(paths.claim))
        except ClaimError as err:
            print(f"[{label(cfg)}] error: {err}", file=sys.stderr)
            outcomes[cfg.run_id] = "failed"
            continue
        if not ok:
            print(f"[{label(cfg)}] skipped: claimed by another process ({paths.claim})")
            outcomes[cfg.run_id] = "claimed"
        elif _skips(cfg, force, quiet=True, data=data) in DONE:
            outcomes[cfg.run_id] = "skipped"  # finished by another process meanwhile
            tidy(cfg, paths, mirror)
        else:
            mine.append(cfg)
    return mine


def run_cells(cells: list[Config], mirror: WandbMirror | None = None) -> dict[str, str]:
    """Run the cells of one job, K at a time; returns {run_id: outcome}, outcome one of
    completed | diverged | failed | skipped | claimed | planned | done. `mirror`: the command's
    W&B mirror (default: a new one, so W&B is up again for these cells)."""
    mirror = WandbMirror() if mirror is None else mirror
    outcomes: dict[str, str] = {}
    force = begin(cells)
    data = DataNow()
    for c in cells:
        try:
            if (o := _precheck(c, mirror, force, data)) is not None:
                outcomes[c.run_id] = o
        except ClaimError as err:
            print(f"[{label(c)}] error: {err}", file=sys.stderr)
            outcomes[c.run_id] = "failed"
    if cells and cells[0].run.plan:
        _show_plan(cells, outcomes)
    groups: dict[Config, list[Config]] = {}
    for cfg in cells:
        if cfg.run_id not in outcomes:
            groups.setdefault(pack_key(cfg), []).append(cfg)
    for group in groups.values():
        _run_group(group, outcomes, mirror, force, data)
    if force is not None and all(force.tried(c) for c in cells):
        force.end()   # the last worker to finish: the next forced run retrains again
    return outcomes


def _run_group(group: list[Config], outcomes: dict[str, str], mirror: WandbMirror,
               force: Force | None, data: DataNow) -> None:
    """Train the cells of one pack group K at a time, adding their outcomes; data that cannot
    be loaded fails each cell of the group with its error."""
    device = resolve_device(group[0].train.device)
    ds, error, size = None, None, 1
    try:
        ds = load_data(group[0], device)
        data.known(group[0], ds.fingerprint)
        size = pack_k(group[0], ds, device, len(group))
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - recorded per cell below
        if stops.stopped():
            raise
        error = f"{type(err).__name__}: {err}"
    while any(c.run_id not in outcomes for c in group):
        with contextlib.ExitStack() as stack:
            pack = _claim_pack(group, size, stack, outcomes, mirror, force, data)
            if pack:
                outcomes |= _run_pack(pack, ds, error, device, mirror, force)
