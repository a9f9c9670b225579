"""One atomic-write helper for every file the harness writes (parquet, checkpoints, reports).

    write(tmp) -> chmod to the user's umask -> fsync -> os.replace(tmp, path)

(`create_new` links the finished file into place instead, so it never replaces one.)

A reader never sees a partial file: the data goes to a temporary file in the target's own
directory (so `os.replace` is atomic on POSIX), which is renamed over the target only once it
is complete. A write that fails (a full disk, a killed process) leaves the previous file as it
was. `mkstemp` creates files readable by the owner only; the result gets the permissions a
plain `open()` would give under the user's umask, so teammates can read a shared study.
Temporary files left by a killed writer of the same target are removed by the next write.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale(path: Path) -> None:
    """Remove the temporary files a killed writer of `path` left behind."""
    for stale in Path(path).parent.glob(f"{_temp_prefix(Path(path))}*.tmp"):
        stale.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` to fill a temporary file, then move it onto `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    fd, name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
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
    fd, name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
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
