"""W&B mirrors a cell's records live, one point per epoch, as one run per cell whose history
equals its parquet rows however often the cell is killed, resumed or forced.

Parquet is the source of truth; W&B gets a row only once it cannot change: an epoch whose
checkpoint is written (`Recorder.epoch`, every `train.checkpoint_every` epochs: with the
default 1, every epoch) or the cell's final parquet (`tidy`, the rest). A resumed cell starts
from its checkpoint, which holds every row W&B was given, so W&B's history is always a prefix
of the cell's records and a resume only appends. The marker `<study>/mirrored/<run_id>.json`
says what W&B holds:

    ids     the W&B ids of the cell that `wandb.init` accepted (an init that raised made none)
    rows    how many rows the last id may hold, written before they are logged
    digest  sha256 of those rows (their METRIC_COLUMNS as the parquet holds them)
    sha256  of the parquet whose rows the last id holds in full (null until then)

A cell's rows that start with the marker's `rows` rows (its digest) continue the last id,
resumed (`resume="allow"`): online, W&B's own `starting_step` says which epochs it has, so none
is logged twice; offline, the cell's one offline run `<wandb>/wandb/offline-run-*-<run_id>` is
written again from epoch 1 (the older one removed), so `wandb sync` uploads one whole run.
Rows that do not (run.force, a checkpoint that could not be used: the cell retrained from
scratch) get a new run: offline the same id in a new offline run, online the id
`<run_id>-<n>` (n counts `ids`), since W&B drops steps logged again under one id. A cell whose
marker holds its parquet's sha256 is not mirrored again; one that does not (W&B was off or
down, a kill mid-log) is brought up to date by the next run that finds it done.

W&B's own rows commit at once (`commit=True`); an offline run's `.wandb` file is written by
W&B every `x_transaction_log_flush_interval` seconds (15; `WANDB_X_TRANSACTION_LOG_FLUSH_
INTERVAL`) and system metrics are sampled while a cell trains. Config values keep their types
(`wandb_config`). A `WandbMirror` is W&B for one command; its first failure is one warning line
and turns W&B off for the rest of that command (its open runs finished); W&B never fails a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from harness.config.job import Config, to_dict
from harness.fsutil import atomic_write_text
from harness.spec.records import METRIC_COLUMNS

if TYPE_CHECKING:
    from harness.sweep.recorder import CellPaths

# Online, wandb.init waits this long for the server (W&B's default, 90 s, per cell without a
# network); offline it keeps W&B's default: only a busy machine's startup of wandb-core counts.
ONLINE_INIT_TIMEOUT_S = 30.0
INTS = ("epoch", "step")


def wandb_config(cfg: Config) -> dict[str, Any]:
    """The cell's config as W&B shows it, each value of its own type: train.compile False or
    its mode, train.pack an int or "auto" (the Config keeps both as the strings YAML gave)."""
    d = to_dict(cfg) | {"run_id": cfg.run_id}
    pack = str(cfg.train.pack)
    d["train"] |= {"compile": False if cfg.train.compile == "false" else cfg.train.compile,
                   "pack": int(pack) if pack.isdigit() else pack}
    return d


def wandb_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The METRIC_COLUMNS of records (EpochMetrics dicts or parquet rows) as the parquet holds
    them: epoch and step ints, the rest floats (not evaluated: NaN)."""
    def value(key: str, v: Any) -> Any:
        if key in INTS:
            return int(v)
        return math.nan if v is None else float(v)
    return [{k: value(k, r[k]) for k in METRIC_COLUMNS} for r in records]


def digest(rows: Sequence[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(list(rows)).encode()).hexdigest()


def _marker(paths: CellPaths) -> dict[str, Any]:
    try:
        m = json.loads(paths.mirrored.read_text())
        return m if isinstance(m, dict) and isinstance(m.get("ids"), list) else {"ids": []}
    except (OSError, ValueError):
        return {"ids": []}


@dataclasses.dataclass
class _Open:
    """A W&B run this command holds open for a cell: its id and the rows it holds."""

    run: Any
    marker: dict[str, Any]
    logged: list[dict[str, Any]]


@dataclasses.dataclass
class WandbMirror:
    """W&B for one command: up until its first failure, then `down` holds that failure in one
    line and every later call is skipped. A W&B failure never fails a run."""

    down: str | None = None
    runs: dict[str, _Open] = dataclasses.field(default_factory=dict, repr=False,
                                               compare=False)

    def __getstate__(self) -> dict[str, Any]:  # a launcher's job elsewhere opens its own runs
        return {"down": self.down, "runs": {}}

    def log(self, cfg: Config, paths: CellPaths, records: Sequence[dict[str, Any]]) -> None:
        """Bring the cell's W&B run up to `records` (all of them durable: in a checkpoint)."""
        self._try(lambda: self._sync(cfg, paths, wandb_rows(records)))

    def replay(self, cfg: Config, paths: CellPaths) -> None:
        """The cell's final parquet: its rows not yet in W&B logged, the run finished."""
        def final() -> None:
            data = paths.parquet.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            if cfg.run_id not in self.runs and _marker(paths).get("sha256") == sha:
                return
            df = pd.read_parquet(paths.parquet)
            self._sync(cfg, paths, wandb_rows(df[METRIC_COLUMNS].to_dict("records")),
                       final=(sha, str(df["status"].iloc[0])))
        self._try(final)

    def close(self, cfg: Config, status: str) -> None:
        """Finish the cell's open run, if any (a failed cell: a rerun resumes it)."""
        if (op := self.runs.pop(cfg.run_id, None)) is not None:
            self._try(lambda: _finish(op, status))

    def _try(self, step: Callable[[], None]) -> None:
        if self.down is not None:
            return
        try:
            step()
        except Exception as err:  # noqa: BLE001 - W&B never fails a run
            text = str(err).strip()
            self.down = f"{type(err).__name__}: {text.splitlines()[0]}" if text \
                else type(err).__name__
            print(f"warning: W&B disabled for the rest of this process ({self.down}); "
                  "the parquet files are complete", file=sys.stderr, flush=True)
            for op in self.runs.values():
                with contextlib.suppress(Exception):
                    op.run.finish()
            self.runs.clear()

    def _sync(self, cfg: Config, paths: CellPaths, rows: list[dict[str, Any]],
              final: tuple[str, str] | None = None) -> None:
        op = self.runs.get(cfg.run_id)
        if op is not None and not _extends(rows, op.logged):  # retrained from scratch
            self.runs.pop(cfg.run_id)
            _finish(op, "restarted")
            op = None
        if op is None:
            if not rows:
                return
            op = self.runs[cfg.run_id] = _open(cfg, paths, rows)
        if len(rows) > len(op.logged):
            op.marker |= {"rows": len(rows), "digest": digest(rows), "sha256": None}
            atomic_write_text(paths.mirrored, json.dumps(op.marker))
            for row in rows[len(op.logged):]:
                op.run.log(row, step=row["epoch"], commit=True)
            op.logged = list(rows)
        if final is not None:
            self.runs.pop(cfg.run_id)
            _finish(op, final[1])
            atomic_write_text(paths.mirrored, json.dumps(op.marker | {"sha256": final[0]}))


def _extends(rows: list[dict[str, Any]], logged: list[dict[str, Any]]) -> bool:
    """Whether `rows` start with the rows `logged`."""
    return len(rows) >= len(logged) and digest(rows[:len(logged)]) == digest(logged)


def _open(cfg: Config, paths: CellPaths, rows: list[dict[str, Any]]) -> _Open:
    """The cell's W&B run, resumed when its rows extend what the marker says it holds, else a
    new one (see the module docstring); the marker names its id once wandb.init returned."""
    old = _marker(paths)
    ids, n = old["ids"], old.get("rows")
    same = bool(ids) and isinstance(n, int) and len(rows) >= n and \
        old.get("digest") == digest(rows[:n])
    offline = cfg.logger.wandb_mode == "offline"
    if offline:
        wandb_id, ids = cfg.run_id, [cfg.run_id]
        for stale in (paths.wandb / "wandb").glob(f"offline-run-*-{cfg.run_id}"):
            shutil.rmtree(stale, ignore_errors=True)  # its rows are all logged again
    elif same:
        wandb_id = ids[-1]
    else:
        wandb_id = cfg.run_id if not ids else f"{cfg.run_id}-{len(ids)}"
        ids = [*ids, wandb_id]
    run = _init(cfg, wandb_id, paths.wandb)
    kept = n if same else 0
    marker = {"ids": ids, "rows": kept, "digest": digest(rows[:kept]), "sha256": None}
    atomic_write_text(paths.mirrored, json.dumps(marker))
    start = 0 if offline else int(getattr(run, "starting_step", 0) or 0)
    return _Open(run, marker, [r for r in rows[:kept] if r["epoch"] < start])


def _init(cfg: Config, wandb_id: str, root: Path) -> Any:
    import wandb

    root.mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=cfg.logger.wandb_project, entity=cfg.logger.wandb_entity, group=cfg.study,
        id=wandb_id, name=f"{cfg.optimizer.name}-{cfg.decay.mode}-lr{cfg.optimizer.lr:.3g}"
        f"-wd{cfg.decay.weight_decay:.3g}-s{cfg.seed}",
        config=wandb_config(cfg), tags=[cfg.optimizer.name, cfg.decay.mode],
        mode=cfg.logger.wandb_mode, dir=str(root), resume="allow", reinit="create_new",
        settings=wandb.Settings(silent=True, **(
            {"init_timeout": ONLINE_INIT_TIMEOUT_S} if cfg.logger.wandb_mode == "online" else {})))


def _finish(op: _Open, status: str) -> None:
    try:
        op.run.summary["status"] = status
        op.run.tags = (*(op.run.tags or ()), status)
    finally:
        op.run.finish()
