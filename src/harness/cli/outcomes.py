"""The outcomes ledger of one `harness run`: what each cell came to, merged over its jobs.

Each Hydra job, on whichever launcher, writes one JSON file into the command's ledger
directory (`$HARNESS_OUTCOMES`): {"outcomes": {run_id: outcome}, "images": n}. The command
merges them with a fixed precedence, so a cell's outcome is the strongest thing any job saw of
it, whatever the order the files are read in (two jobs of one grid: one trains a cell, the
other finds it claimed or done):

    failed > diverged > completed > skipped > claimed        (a run)
    done > planned                                           (a plan: run.plan=true)

A ledger that cannot be written (a full disk after the cells finished) is one line from the
job; a job in this process keeps its outcomes in the command's `unwritten` list (held by
`harness.cli.run` for one command and passed to its jobs), and a cell no job recorded counts
as `unrecorded`. Either makes the command exit 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid
from collections import Counter
from pathlib import Path

LEDGER = "HARNESS_OUTCOMES"  # environment variable: where jobs write their outcomes
PRECEDENCE = ("failed", "diverged", "completed", "skipped", "claimed", "done", "planned")
SHOWN = ("completed", "diverged", "failed", "skipped", "claimed", "planned", "done",
         "unrecorded")
FAILURES = ("failed", "unrecorded")

def stronger(a: str, b: str) -> str:
    """The outcome that wins when two jobs report a and b for one cell."""
    rank = {o: i for i, o in enumerate(PRECEDENCE)}
    return min(a, b, key=lambda o: rank.get(o, -1))  # an unknown word wins: never hidden


def merge(into: dict[str, str], outcomes: dict[str, str]) -> dict[str, str]:
    for run_id, outcome in outcomes.items():
        into[run_id] = stronger(into[run_id], outcome) if run_id in into else outcome
    return into


def write(outcomes: dict[str, str], images: int, unwritten: list[dict[str, str]]) -> None:
    """This job's outcomes into the command's ledger (if there is one); on failure one line,
    and the outcomes kept in `unwritten` (the command's, when the job runs in its process)."""
    ledger = os.environ.get(LEDGER)
    if not ledger:
        return
    job = Path(ledger) / uuid.uuid4().hex
    tmp = job.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps({"outcomes": outcomes, "images": images}))
        os.replace(tmp, job.with_suffix(".json"))
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        unwritten.append(outcomes)
        print(f"harness run: error: cannot write the outcomes ledger {tmp}: "
              f"{err.strerror or err}; the cells' records are in their parquet files",
              file=sys.stderr, flush=True)


def collect(ledger: Path, expected: list[str], unwritten: list[dict[str, str]] | None = None
            ) -> tuple[dict[str, str], int, bool]:
    """Merge the ledger's files and the command's `unwritten` outcomes: ({run_id: outcome},
    images to train, whether any job's ledger write failed). A cell in `expected` that no job
    recorded is `unrecorded`."""
    outcomes: dict[str, str] = {}
    images = 0
    for path in sorted(ledger.glob("*.json")):
        job = json.loads(path.read_text())
        merge(outcomes, job["outcomes"])
        images += job["images"]
    unwritten = unwritten or []
    lost = bool(unwritten)
    for job in unwritten:
        merge(outcomes, job)
    for run_id in expected:
        outcomes.setdefault(run_id, "unrecorded")
    return outcomes, images, lost


def summarize(outcomes: dict[str, str]) -> str:
    counts = Counter(outcomes.values())
    parts = [f"{counts[k]} {k}" for k in SHOWN if counts[k]]
    return f"{len(outcomes)} cells: " + (", ".join(parts) or "none")


def failed(outcomes: dict[str, str]) -> bool:
    return any(o in FAILURES for o in outcomes.values())
