"""The outcomes of one `harness run`: what each cell came to, merged over its jobs.

Each Hydra job returns {"outcomes": {run_id: outcome}, "images": n} (harness.cli.run.Task),
from whichever launcher; the command merges them with a fixed precedence, so a cell's outcome
is the strongest thing any job saw of it, whatever order the jobs come back in (two jobs of one
grid: one trains a cell, the other finds it claimed or done):

    failed > diverged > completed > skipped > claimed        (a run)
    done > planned                                           (a plan: run.plan=true)

A cell that was checked but that no job reported (its job failed or its launcher lost it)
is `unrecorded`; a failed or unrecorded cell makes the command exit 1.
"""

from __future__ import annotations

from collections import Counter

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


def summarize(outcomes: dict[str, str]) -> str:
    counts = Counter(outcomes.values())
    parts = [f"{counts[k]} {k}" for k in SHOWN if counts[k]]
    return f"{len(outcomes)} cells: " + (", ".join(parts) or "none")


def failed(outcomes: dict[str, str]) -> bool:
    return any(o in FAILURES for o in outcomes.values())
