"""One cell's outputs: its records, checkpoint, parquet file, W&B mirror and final status.

cells.py schedules (claims, resume, packs); a `Recorder` owns what one cell leaves behind:

    epoch -> records (+ UTC timestamp) -> checkpoint every `train.checkpoint_every` epochs
    finish -> status (completed only if the records hold epochs 1..T) -> parquet (atomic)
           -> checkpoint removed (only once a completed/diverged parquet is written)
           -> W&B mirror: the parquet rows replayed as one run (`WandbMirror.replay`)

Every OSError (a full disk) is one line naming the path and the errno text; it never removes
the last good checkpoint. W&B mirrors a cell once its parquet is final (completed or
diverged; a failed cell is retrained, so it gets no run of its own), so a cell has one run
whose history equals its rows however often it was killed and resumed: a marker
`<study>/mirrored/<run_id>.json` holds the sha256 of the parquet it mirrors; a cell whose marker
does not match (killed mid-mirror, retrained with run.force) is mirrored again. Offline runs
live in `<study>/wandb/offline-run-*-<run_id>` (an older one of the cell is replaced);
online, a cell mirrored before gets a new id `<run_id>-<n>`, since W&B drops steps re-logged
under one id: n counts the marker's `ids`, the ids W&B accepted (their `wandb.init` returned;
an init that raised created no run, so it leaves no id). A `WandbMirror` is W&B for one
command: `harness run` makes one for all the Hydra jobs it runs in this process (a job a
launcher starts elsewhere gets a copy), a direct call of `run_cells` one for its cells. Its
first failure to reach W&B is one warning line and turns W&B off for the rest of that command;
the cells it missed are mirrored by the next run that finds them done (their marker is stale).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from harness.config.job import Config, to_dict
from harness.fsutil import atomic_write_text, remove_stale
from harness.spec.records import METRIC_COLUMNS
from harness.sweep import checkpoint
from harness.sweep.records import frame, now_utc, write_parquet
from harness.train.loop import Epoch

if TYPE_CHECKING:
    from harness.sweep.force import Force

DONE = ("completed", "diverged")
# Online, wandb.init waits this long for the server (W&B's default, 90 s, per cell without a
# network); offline it keeps W&B's default: only a busy machine's startup of wandb-core counts.
ONLINE_INIT_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class CellPaths:
    parquet: Path
    checkpoint: Path
    claim: Path
    mirrored: Path
    wandb: Path          # W&B's root_dir: runs go to <wandb>/wandb/

    @classmethod
    def of(cls, cfg: Config) -> CellPaths:
        study = Path(cfg.run.results_dir) / cfg.study
        return cls(parquet=study / "runs" / f"{cfg.run_id}.parquet",
                   checkpoint=study / "checkpoints" / f"{cfg.run_id}.pt",
                   claim=study / "claims" / f"{cfg.run_id}.lock",
                   mirrored=study / "mirrored" / f"{cfg.run_id}.json",
                   wandb=Path(cfg.logger.wandb_dir) if cfg.logger.wandb_dir else study)


def label(cfg: Config) -> str:
    return (f"{cfg.run_id} {cfg.optimizer.name}/{cfg.decay.mode} lr={cfg.optimizer.lr:.4g} "
            f"wd={cfg.decay.weight_decay:.4g} seed={cfg.seed}")


def _oserror(err: OSError) -> str:
    return f"{err.strerror or err} (errno {err.errno})" if err.errno else str(err)


class Recorder:
    """Records of one cell, written when it is done; `status` is its outcome so far."""

    def __init__(self, cfg: Config, device: str, mirror: WandbMirror,
                 n_train: int | None = None, num_classes: int | None = None) -> None:
        self.cfg, self.paths, self.device, self.mirror = cfg, CellPaths.of(cfg), device, mirror
        self.n_train, self.num_classes = n_train, num_classes
        self.records: list[dict[str, Any]] = []
        self.status, self.error, self.final = "completed", None, False

    def say(self, text: str, err: bool = False) -> None:
        print(f"[{label(self.cfg)}] {text}", file=sys.stderr if err else sys.stdout, flush=True)

    def resume(self, force: Force | None = None) -> dict[str, Any] | None:
        """The validated checkpoint to resume from (its records adopted), or None. Under
        run.force only a checkpoint that `force` wrote (harness.sweep.force)."""
        if self.cfg.run.force and (force is None or not force.covers(self.paths.checkpoint)):
            return None
        try:
            state = checkpoint.load(self.paths.checkpoint, self.cfg.run_id, self.cfg.train.epochs)
        except checkpoint.Invalid as err:
            self.say(f"checkpoint {self.paths.checkpoint} unusable: {err}; retraining from "
                     "scratch", err=True)
            return None
        if state is not None:
            self.records = list(state["records"])
            self.say(f"resuming after epoch {state['epoch']}")
        return state

    def restart(self, reason: str) -> None:
        """Forget resumed records: the checkpoint could not be loaded into the model."""
        self.say(f"checkpoint {self.paths.checkpoint} unusable: {reason}; retraining from "
                 "scratch", err=True)
        self.records = []

    def epoch(self, ep: Epoch) -> None:
        m = dataclasses.asdict(ep.metrics) | {"timestamp": now_utc()}
        self.records.append(m)
        if self.cfg.logger.progress != "none":
            print(_line(self.cfg, m), flush=True)
        every, n = self.cfg.train.checkpoint_every, m["epoch"]
        if ep.diverged:  # its record is final now, whatever happens to the rest of the pack
            self.status = "diverged"
            self.finish()
        elif every and n % every == 0 and n < self.cfg.train.epochs:
            self._checkpoint(ep.state() | {"records": self.records})

    def _checkpoint(self, state: dict[str, Any]) -> None:
        try:
            checkpoint.save(state, self.paths.checkpoint, self.cfg.run_id)
        except OSError as err:
            self.say(f"warning: cannot write checkpoint {self.paths.checkpoint}: "
                     f"{_oserror(err)}; training goes on, the previous checkpoint is kept",
                     err=True)

    def fail(self, error: str) -> None:
        if not self.final:
            self.status, self.error = "failed", error

    def finish(self) -> str:
        """Write the parquet file (once), then tidy; returns the cell's outcome."""
        if self.final:
            return self.status
        self.final = True
        want = list(range(1, self.cfg.train.epochs + 1))
        got = [int(r["epoch"]) for r in self.records]
        if self.status == "completed" and got != want:
            self.status, self.error = "failed", (
                f"records hold epochs {got}, expected 1..{self.cfg.train.epochs}")
        df = frame(self.cfg, self.records, self.status, self.error, n_train=self.n_train,
                   num_classes=self.num_classes, device=self.device)
        try:
            write_parquet(df, self.paths.parquet)
        except OSError as err:
            self.say(f"error: cannot write {self.paths.parquet}: {_oserror(err)}; the "
                     "checkpoint is kept, a rerun resumes from it", err=True)
            self.status = "failed"
            return self.status
        self.say(f"recorded {self.status}: {self.paths.parquet}")
        if self.status in DONE:
            tidy(self.cfg, self.paths, self.mirror)
        return self.status


def _line(cfg: Config, m: dict[str, Any]) -> str:
    """One epoch's progress; the test error only in epochs that evaluate it (train.eval_every)."""
    test = m["test_error"]
    shown = "" if test is None or math.isnan(test) else f"test_err {100 * test:.2f}% "
    return (f"[{label(cfg)}] epoch {m['epoch']}/{cfg.train.epochs} "
            f"loss {m['train_loss']:.4f} train_err {100 * m['train_error']:.2f}% "
            f"{shown}{m['images_per_s']:.0f} img/s")


def tidy(cfg: Config, paths: CellPaths, mirror: WandbMirror) -> None:
    """For a cell whose completed/diverged parquet is written: drop the checkpoint, mirror it.
    A checkpoint that cannot be removed is one warning line (the cell is done either way)."""
    try:
        paths.checkpoint.unlink(missing_ok=True)
        remove_stale(paths.checkpoint)
    except OSError as err:
        print(f"[{label(cfg)}] warning: cannot remove {paths.checkpoint}: {err.strerror}",
              file=sys.stderr)
    if cfg.logger.wandb_mode != "disabled":
        mirror.replay(cfg, paths)


@dataclasses.dataclass
class WandbMirror:
    """W&B for one command: up until its first failure, then `down` holds that failure in one
    line and every later `replay` is skipped. A W&B failure never fails a run."""

    down: str | None = None

    def replay(self, cfg: Config, paths: CellPaths) -> None:
        """Replay the cell's parquet rows as one W&B run, unless already mirrored or down."""
        if self.down is not None:
            return
        try:
            _replay(cfg, paths)
        except Exception as err:  # noqa: BLE001 - W&B never fails a run
            text = str(err).strip()
            self.down = f"{type(err).__name__}: {text.splitlines()[0]}" if text \
                else type(err).__name__
            print(f"warning: W&B disabled for the rest of this process ({self.down}); "
                  "the parquet files are complete", file=sys.stderr, flush=True)


def _marker(paths: CellPaths) -> dict[str, Any]:
    try:
        m = json.loads(paths.mirrored.read_text())
        return m if isinstance(m, dict) and isinstance(m.get("ids"), list) else {"ids": []}
    except (OSError, ValueError):
        return {"ids": []}


def _replay(cfg: Config, paths: CellPaths) -> None:
    """Log the cell's rows as one W&B run unless its marker holds this parquet's sha256; the
    marker names the W&B id once `wandb.init` accepted it, before the run is logged (a run
    killed mid-log exists on the server), and the sha256 only after the whole run is logged."""
    digest = hashlib.sha256(paths.parquet.read_bytes()).hexdigest()
    old = _marker(paths)
    if old.get("sha256") == digest:
        return
    ids = old["ids"]
    if cfg.logger.wandb_mode == "offline":
        wandb_id = cfg.run_id
        for stale in (paths.wandb / "wandb").glob(f"offline-run-*-{cfg.run_id}"):
            shutil.rmtree(stale, ignore_errors=True)  # partial or superseded mirrors
    else:
        wandb_id = cfg.run_id if not ids else f"{cfg.run_id}-{len(ids)}"
    marker = {"ids": [*ids, wandb_id], "sha256": None}
    _log_run(cfg, pd.read_parquet(paths.parquet), wandb_id, paths.wandb,
             accepted=lambda: atomic_write_text(paths.mirrored, json.dumps(marker)))
    atomic_write_text(paths.mirrored, json.dumps(marker | {"sha256": digest}))


def _log_run(cfg: Config, df: pd.DataFrame, wandb_id: str, root: Path,
             accepted: Callable[[], None]) -> None:
    """One W&B run of `df`'s rows; `accepted()` runs once `wandb.init` returned, before any
    row is logged (an init that raises never calls it)."""
    import wandb

    root.mkdir(parents=True, exist_ok=True)
    status = str(df["status"].iloc[0])
    run = wandb.init(
        project=cfg.logger.wandb_project, entity=cfg.logger.wandb_entity, group=cfg.study,
        id=wandb_id, name=f"{cfg.optimizer.name}-{cfg.decay.mode}-lr{cfg.optimizer.lr:.3g}"
        f"-wd{cfg.decay.weight_decay:.3g}-s{cfg.seed}",
        config=to_dict(cfg) | {"run_id": cfg.run_id},
        tags=[cfg.optimizer.name, cfg.decay.mode, status], mode=cfg.logger.wandb_mode,
        dir=str(root), resume="allow", reinit="finish_previous",
        settings=wandb.Settings(silent=True, **(
            {"init_timeout": ONLINE_INIT_TIMEOUT_S} if cfg.logger.wandb_mode == "online" else {})))
    try:
        accepted()
        for row in df[METRIC_COLUMNS].to_dict("records"):
            run.log(row, step=int(row["epoch"]))
        run.summary["status"] = status
    finally:
        run.finish()
