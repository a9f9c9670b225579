"""One atomic-write helper for every file the harness writes (parquet, checkpoints, reports).

    write(tmp) -> chmod to the user's umask -> fsync -> os.replace(tmp, path)

(`create_new` links the finished file into place instead, so it never replaces one.)

A reader never sees a partial file: the data goes to a temporary file in the target's own
directory (so `os.replace` is atomic on POSIX), which is renamed over the target only once it
is complete. A write that fails (a full disk, a killed process) leaves the previous file as it
was. `mkstemp` creates files readable by the owner only; the result gets the permissions a
plain `open()` would give under the user's umask, so teammates can read a shared study.

Temporary files are named ``.<name>.<host>.<pid>.<random>.tmp``: the writer's host (its
hostname and, on Linux, its pid namespace) and process id. Before each write, `remove_stale`
removes the temporary files of the same target that a killed writer left behind, and only
those: a file whose writer ran on this host under a pid that is no longer alive, or any file
not modified for STALE_AGE_S (an hour: a writer on another host of a shared file system, whose
pid cannot be asked, or a pid reused since). A live writer's file, on this host or a file
another host wrote in the last hour, is never touched, so two commands may write the same
target at once (e.g. two `harness report` of one study): each renames its own complete file,
the last rename wins.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

STALE_AGE_S = 3600.0  # a temporary file untouched this long is a dead writer's, whatever host


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@functools.cache
def host() -> str:
    """This host as temporary-file names give it: the hostname (characters other than letters,
    digits and '-' as '-') and, where there is one, the pid namespace, so that two containers
    with one hostname are two hosts."""
    name = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
    try:
        return f"{name}-{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return name


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def _writer_prefix(path: Path) -> str:
    """The prefix of this process's temporary files for `path` (the pid read at each write:
    a forked child is another writer)."""
    return f"{_temp_prefix(path)}{host()}.{os.getpid()}."


def _alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (a process of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):  # not a pid this system can have
        return False
    return True


def is_stale(tmp: Path, path: Path, now: float | None = None) -> bool:
    """Whether `tmp`, a temporary file of `path`, was left by a dead writer (module docstring):
    written on this host by a pid that is not alive, or not modified for STALE_AGE_S."""
    try:
        age = (time.time() if now is None else now) - tmp.stat().st_mtime
    except FileNotFoundError:
        return False  # its writer renamed or removed it meanwhile
    if age > STALE_AGE_S:
        return True
    writer = tmp.name[len(_temp_prefix(path)):-len(".tmp")].rsplit(".", 2)
    if len(writer) != 3 or writer[0] != host() or not writer[1].isdigit():
        return False  # another host's, or no writer in its name: only the age says
    return not _alive(int(writer[1]))


def remove_stale(path: Path, now: float | None = None) -> None:
    """Remove the temporary files of `path` that a killed writer left behind (`is_stale`);
    those of live writers stay."""
    path = Path(path)
    pattern = glob.escape(_temp_prefix(path)) + "*.tmp"
    for tmp in path.parent.glob(pattern):
        if is_stale(tmp, path, now):
            tmp.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` to fill a temporary file, then move it onto `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    fd, name = tempfile.mkstemp(prefix=_writer_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself survives a crash before a later unlink
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write` of a UTF-8 text file."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def create_new(path: Path, text: str) -> bool:
    """Create `path` holding `text` unless it exists: False, and the file is left as it was,
    if it does. Atomic: the complete file is hard-linked into place (a link never replaces),
    so of two processes creating one path exactly one gets True."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=_writer_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        _fsync_dir(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)
