"""`run.force=true` that survives an interruption: a forced command goes on where it stopped.

A forced command (its cells, as one Hydra job gets them) has an identity, the token = a hash
of the sorted run_ids of its cells: the same command (a Slurm requeue, a rerun by hand, the
jobs `run.worker=0/1` of one grid) has the same token, another grid another one. Its mark is

    <results>/<study>/forced/<token>.json     created when a forced command finds none

made atomically and never replaced (`fsutil.create_new`: of two workers starting together one
creates it, both use it); its mtime is the instant the force began, on the filesystem's own
clock, the clock that also stamps the parquet files and checkpoints it is compared with (no
host's clock enters). While the mark exists:
  - a cell whose parquet is final (completed/diverged) and written after the mark was
    retrained by this force: it is skipped (a requeued job does not retrain it again);
  - a checkpoint written after the mark is this force's own: a killed cell resumes from it
    (one written before it is ignored: force means retrain).
A command that ends (not killed) removes the mark once every one of its cells has a parquet
written after the mark (final or failed: each was tried): the last worker of a grid to finish
sees that, a worker that finishes first and still sees a cell of the other worker left keeps
it. So the next forced run of the grid retrains everything again. A killed command leaves the
mark: that is the requeue. A worker that starts only after the grid's force ended starts a new
one. Deleting `<study>/forced/` forgets every unfinished force. Non-forced runs and plans
(`run.plan`) never read or write marks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import time
from pathlib import Path

from harness.config.job import Config
from harness.fsutil import create_new
from harness.sweep.recorder import CellPaths


def token(cells: list[Config]) -> str:
    """The identity of a forced command: a hash of its cells' sorted run_ids."""
    ids = "\n".join(sorted({c.run_id for c in cells}))
    return hashlib.sha256(ids.encode()).hexdigest()[:16]


def mark_path(cells: list[Config]) -> Path:
    cfg = cells[0]
    return Path(cfg.run.results_dir) / cfg.study / "forced" / f"{token(cells)}.json"


@dataclasses.dataclass(frozen=True)
class Force:
    """The mark of a forced command that has begun (this process or an earlier one)."""

    path: Path
    began_ns: int   # the mark's mtime

    def covers(self, path: Path) -> bool:
        """Whether `path` was written after this force began."""
        try:
            return path.stat().st_mtime_ns > self.began_ns
        except FileNotFoundError:
            return False

    def tried(self, cfg: Config) -> bool:
        """The cell has a parquet written under this force (any status)."""
        return self.covers(CellPaths.of(cfg).parquet)

    def end(self) -> None:
        """Remove the mark (and the folder, if that leaves it empty)."""
        self.path.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()
        except OSError:
            pass


def begin(cells: list[Config]) -> Force | None:
    """The force of a forced command: its mark, created now if there is none; None for a
    command that is not forced (or only plans). One line when it goes on with an earlier one."""
    if not cells or not cells[0].run.force or cells[0].run.plan:
        return None
    path = mark_path(cells)
    text = json.dumps({"began": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "by": f"{socket.gethostname()} pid {os.getpid()}",
                       "run_ids": sorted({c.run_id for c in cells})}, indent=1)
    while True:
        created = create_new(path, text)
        try:
            began = path.stat().st_mtime_ns
            break
        except FileNotFoundError:  # another worker of the grid just ended that force
            continue
    if not created:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(began / 1e9))
        print(f"run.force: going on with this forced run begun {stamp} ({path}): cells it "
              "retrained are kept, its checkpoints resumed; remove that file to retrain all",
              flush=True)
    return Force(path, began)
