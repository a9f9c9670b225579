"""SIGINT and SIGTERM end a command with one line, whenever they come.

`guarded(command, body)` runs body() with SIGINT and SIGTERM raising `Stopped` in this (main)
process, the first of them only: from then on both are ignored, so a second one (Ctrl-C twice,
a scheduler's TERM then INT) cannot break the unwinding, the line or the exit. (Two signals
that arrive together, before Python runs either handler, are handled in signal-number order:
SIGINT's line then.) The line is "<command>: interrupted (SIGINT); run the same command to
resume" and the exit code 128 + the signal's number: 130 (SIGINT) or 143 (SIGTERM).

A signal's exception can land anywhere, inside a library too, whose cleanup may then raise an
error of its own over it (OmegaConf does: "AttributeError raised while resolving
interpolation"), or which may swallow it (`except BaseException`). So the first signal also
stays on record, in the handler that ignores the later ones: `stopped()` names it, and
whatever body() ends with once it came, an error, a bad-input exit code or a normal return,
the command ends as that signal. Code that catches errors broadly (a cell's failure) re-raises
when `stopped()`, and `check()`, called once per training step, raises `Stopped` again if a
library swallowed it: a signal never becomes a failed cell nor gets lost.

This module imports nothing of the harness and nothing heavy, so the guard is in place before
the command's imports (Hydra, torch) start: a signal during them is the same one line. The
previous handlers come back after, unless a signal ended the command. Jobs in other processes
(submitit) keep their own handlers.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator

STOPS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """SIGINT or SIGTERM in the command's process: like KeyboardInterrupt, no cell catches it.

    Not KeyboardInterrupt itself: CPython marks a process whose KeyboardInterrupt escaped an
    `exec` of source text (dataclasses and namedtuple build their methods that way, so a Ctrl-C
    during `import torch` often lands in one) to kill itself with SIGINT at exit, whatever code
    the command returns: the exit status would depend on where the signal landed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Stopping:
    """The handler of both signals once the first came: ignores the later ones (a Python
    handler, not SIG_IGN: a signal already pending when the first is handled would otherwise
    raise "ignored due to race condition"), and remembers the first."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __call__(self, signum: int, frame: object) -> None:
        """A later signal: nothing."""


def _stop(signum: int, frame: object) -> None:
    stopping = _Stopping(signum)
    for sig in STOPS:
        signal.signal(sig, stopping)
    raise Stopped(signum)


def stopped() -> int | None:
    """The signal that is stopping this command, or None when none came."""
    handler = signal.getsignal(signal.SIGINT)
    return handler.signum if isinstance(handler, _Stopping) else None


def check() -> None:
    """Raise `Stopped` when a signal came (its first exception was swallowed on the way)."""
    signum = stopped()
    if signum is not None:
        raise Stopped(signum)


@contextlib.contextmanager
def _raising() -> Iterator[None]:
    previous = {sig: signal.signal(sig, _stop) for sig in STOPS}
    try:
        yield
    finally:
        # no signal came (nor ended a nested guard, which leaves SIG_IGN): as before
        if stopped() is None and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def guarded(command: str, body: Callable[[], int]) -> int:
    """body()'s exit code, or the signal's (130 / 143) after the one line on stderr."""
    try:
        with _raising():
            code = body()
    except Stopped as err:
        signum = err.signum
    except KeyboardInterrupt:  # raised by a library of its own accord
        signum = signal.SIGINT
    except Exception:
        signum = stopped()
        if signum is None:
            raise
    else:
        signum = stopped()
        if signum is None:
            return code
    print(f"{command}: interrupted ({signal.Signals(signum).name}); run the same command to "
          "resume", file=sys.stderr)
    for sig in STOPS:  # the process ends: the interpreter's exit resets a Python handler to
        signal.signal(sig, signal.SIG_IGN)  # the default, which a late signal would hit
    return 128 + signum
