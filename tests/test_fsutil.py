"""harness.fsutil: atomic writes, and which temporary files `remove_stale` may remove: a dead
writer's on this host or any untouched for STALE_AGE_S, never a live writer's (issue 22)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from harness import fsutil


def temp(path: Path, host: str, pid: int | str, age_s: float = 0.0, rand: str = "k3x_9a1q"
         ) -> Path:
    """A temporary file of `path` as writer (host, pid) names it, last modified age_s ago."""
    tmp = path.parent / f".{path.name}.{host}.{pid}.{rand}.tmp"
    tmp.write_bytes(b"partial")
    if age_s:
        then = time.time() - age_s
        os.utime(tmp, (then, then))
    return tmp


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def test_temporary_files_name_their_writer(tmp_path: Path) -> None:
    seen = []
    fsutil.atomic_write(tmp_path / "a.csv", lambda tmp: seen.append(tmp.name) or
                        tmp.write_text("x"))
    assert seen[0].startswith(f".a.csv.{fsutil.host()}.{os.getpid()}.")
    assert seen[0].endswith(".tmp") and "." not in fsutil.host()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]


def test_a_live_writers_file_stays_a_dead_or_old_ones_goes(tmp_path: Path) -> None:
    path = tmp_path / "report.md"
    host = fsutil.host()
    live = temp(path, host, os.getpid())
    parent = temp(path, host, os.getppid())
    dead = temp(path, host, dead_pid())
    other_host = temp(path, "elsewhere-1", dead_pid())  # its pid cannot be asked here
    old_other = temp(path, "elsewhere-2", 1, age_s=2 * fsutil.STALE_AGE_S)
    old_live = temp(path, host, os.getpid(), age_s=2 * fsutil.STALE_AGE_S, rand="old")
    unnamed = temp(path, "x", "nopid")  # no writer in its name (e.g. an older harness's)
    other_target = tmp_path / f".other.md.{host}.{dead_pid()}.abc.tmp"
    other_target.write_bytes(b"")
    fsutil.remove_stale(path)
    left = {p.name for p in tmp_path.iterdir()}
    assert {live.name, parent.name, other_host.name, unnamed.name, other_target.name} <= left
    assert not {dead.name, old_other.name, old_live.name} & left


def test_a_second_writer_leaves_the_first_ones_file_alone(tmp_path: Path) -> None:
    """Writer B's write of the same target, while A fills its temporary file, removes nothing
    of A's: both complete, the last rename wins (before issue 22 A crashed here)."""
    path = tmp_path / "cells.csv"

    def first(tmp: Path) -> None:
        tmp.write_text("a, half")
        fsutil.atomic_write_text(path, "b\n")  # the other writer, meanwhile
        assert tmp.exists()
        tmp.write_text("a\n")

    fsutil.atomic_write(path, first)
    assert path.read_text() == "a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cells.csv"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    fsutil.atomic_write_text(path, "old")

    def fail(tmp: Path) -> None:
        tmp.write_text("new, half")
        raise OSError(28, "No space left on device")

    try:
        fsutil.atomic_write(path, fail)
    except OSError:
        pass
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]
