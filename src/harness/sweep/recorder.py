"""One cell's outputs: its records, checkpoint, parquet file, W&B mirror and final status.

cells.py schedules (claims, resume, packs); a `Recorder` owns what one cell leaves behind:

    epoch -> records (+ UTC timestamp) -> checkpoint every `train.checkpoint_every` epochs
          -> W&B: the rows of that checkpoint, live (`WandbMirror.log`)
    finish -> status (completed only if the records hold epochs 1..T) -> parquet (atomic)
           -> checkpoint removed (only once a completed/diverged parquet is written)
           -> W&B: the parquet's rows not yet logged, the run finished (`WandbMirror.replay`)

Every OSError (a full disk) is one line naming the path and the errno text; it never removes
the last good checkpoint. W&B (harness.sweep.mirror) gets an epoch once it is durable (in a
checkpoint or the final parquet), so a cell has one run whose history equals its rows however
often it was killed and resumed. A `WandbMirror` is W&B for one command: `harness run` makes
one for all the Hydra jobs it runs in this process (a job a launcher starts elsewhere gets a
copy), a direct call of `run_cells` one for its cells. Its first failure to reach W&B is one
warning line and turns W&B off for the rest of that command; the cells it missed are mirrored
by the next run that finds them done (their marker is stale).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config.job import Config
from harness.fsutil import remove_stale
from harness.sweep import checkpoint
from harness.sweep.mirror import WandbMirror
from harness.sweep.records import frame, now_utc, write_parquet
from harness.train.loop import Epoch

if TYPE_CHECKING:
    from harness.sweep.force import Force

__all__ = ["DONE", "CellPaths", "Recorder", "WandbMirror", "label", "tidy"]

DONE = ("completed", "diverged")


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
        elif every and n % every == 0 and n < self.cfg.train.epochs and \
                self._checkpoint(ep.state() | {"records": self.records}) and \
                self.cfg.logger.wandb_mode != "disabled":
            self.mirror.log(self.cfg, self.paths, self.records)  # durable now: W&B sees it

    def _checkpoint(self, state: dict[str, Any]) -> bool:
        try:
            checkpoint.save(state, self.paths.checkpoint, self.cfg.run_id)
        except OSError as err:
            self.say(f"warning: cannot write checkpoint {self.paths.checkpoint}: "
                     f"{_oserror(err)}; training goes on, the previous checkpoint is kept",
                     err=True)
            return False
        return True

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
        else:
            self.say(f"recorded {self.status}: {self.paths.parquet}")
        if self.status in DONE:
            tidy(self.cfg, self.paths, self.mirror)
        else:  # failed: its W&B run keeps the durable rows, a rerun resumes it
            self.mirror.close(self.cfg, self.status)
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
