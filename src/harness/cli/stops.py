"""SIGINT and SIGTERM end a command with one line, whenever they come.

`guarded(command, body)` runs body() with SIGINT raising KeyboardInterrupt and SIGTERM raising
`Terminated` in this (main) process, the first of them only: from then on both are ignored, so
a second one (Ctrl-C twice, a scheduler's TERM then INT) cannot break the unwinding, the line
or the exit. (Two signals that arrive together, before Python runs either handler, are handled
in signal-number order: SIGINT's line then.) The line is "<command>: interrupted (SIGINT); run
the same command to resume" and the exit code 130 (SIGINT) or 143 (SIGTERM). This module
imports nothing heavy, so the guard is in place before the command's imports (Hydra, torch)
start: a signal during them is the same one line. The previous handlers come back after,
unless a signal ended the command. Jobs in other processes (submitit) keep their own handlers.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator

STOPS = (signal.SIGINT, signal.SIGTERM)


class Terminated(BaseException):
    """SIGTERM in the command's process: like KeyboardInterrupt, no cell catches it."""


def _ignore(signum: int, frame: object) -> None:
    """A later signal: nothing. (A Python handler, not SIG_IGN: a signal already pending
    when the first is handled would otherwise raise "ignored due to race condition".)"""


def _stop(signum: int, frame: object) -> None:
    for sig in STOPS:
        signal.signal(sig, _ignore)
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated


@contextlib.contextmanager
def _raising() -> Iterator[None]:
    previous = {sig: signal.signal(sig, _stop) for sig in STOPS}
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) not in (_ignore, signal.SIG_IGN):  # no signal came
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def guarded(command: str, body: Callable[[], int]) -> int:
    """body()'s exit code, or the signal's (130 / 143) after the one line on stderr."""
    try:
        with _raising():
            return body()
    except (KeyboardInterrupt, Terminated) as err:
        name, code = (("SIGINT", 130) if isinstance(err, KeyboardInterrupt) else
                      ("SIGTERM", 128 + signal.SIGTERM))
        print(f"{command}: interrupted ({name}); run the same command to resume",
              file=sys.stderr)
        for sig in STOPS:  # the process ends: the interpreter's exit resets a Python handler
            signal.signal(sig, signal.SIG_IGN)  # to the default, which a late signal would hit
        return code
