"""harness.stops: a signal ends the command as that signal (one line, 128 + its number),
whatever its exception met on the way: CPython's exec of source text, a library's cleanup
raising over it, a library swallowing it (the campaign of issue 22 found the first two)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from harness import stops

LINE = "cmd: interrupted ({}); run the same command to resume\n"


@pytest.fixture(autouse=True)
def _handlers_back():
    """guarded leaves SIG_IGN behind once a signal ended it (the process ends then)."""
    saved = {sig: signal.getsignal(sig) for sig in stops.STOPS}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _cleanup_raises_over_it() -> int:
    """A library whose cleanup fails once the signal's exception interrupted it (OmegaConf's
    flag_override does: "AttributeError raised while resolving interpolation")."""
    node = None
    try:
        signal.raise_signal(signal.SIGTERM)
    finally:
        node._invalidate_flags_cache()  # type: ignore[union-attr]
    return 0


def _swallows_it() -> int:
    """A library that catches everything, then a command that ends normally."""
    try:
        signal.raise_signal(signal.SIGINT)
    except BaseException:  # noqa: BLE001 - the behaviour under test
        pass
    return 0


def _bad_input_after_it() -> int:
    """The error a broken library call turned into: harness run's bad-input path."""
    try:
        signal.raise_signal(signal.SIGINT)
    except BaseException:  # noqa: BLE001
        pass
    stops.check()
    return 2


@pytest.mark.parametrize("body,sig", [(_cleanup_raises_over_it, signal.SIGTERM),
                                      (_swallows_it, signal.SIGINT),
                                      (_bad_input_after_it, signal.SIGINT)])
def test_the_signal_ends_the_command_whatever_its_exception_met(body, sig, capsys):
    assert stops.guarded("cmd", body) == 128 + sig
    assert capsys.readouterr().err == LINE.format(sig.name)


def test_without_a_signal_the_body_decides_and_the_handlers_come_back(capsys):
    before = signal.getsignal(signal.SIGINT)
    assert stops.guarded("cmd", lambda: 3) == 3
    with pytest.raises(ZeroDivisionError):
        stops.guarded("cmd", lambda: 1 // 0)
    assert signal.getsignal(signal.SIGINT) is before and stops.stopped() is None
    stops.check()  # nothing to raise
    assert capsys.readouterr().err == ""


def test_check_raises_again_once_a_signal_came():
    seen = []

    def body() -> int:
        try:
            signal.raise_signal(signal.SIGTERM)
        except stops.Stopped:
            pass
        seen.append(stops.stopped())
        signal.raise_signal(signal.SIGINT)  # a second signal: ignored
        with pytest.raises(stops.Stopped):
            stops.check()
        return 0

    assert stops.guarded("cmd", body) == 143
    assert seen == [signal.SIGTERM]


def test_a_signal_inside_exec_of_source_text_exits_130_not_by_sigint(tmp_path):
    """Under `python -m` (as the scripts and tests run harness), CPython kills the process by
    SIGINT at exit once a KeyboardInterrupt escaped an exec of source text (dataclasses build
    methods so, during `import torch`), whatever code it exits with: the status was -2, not
    130, when the signal landed there. Stopped is not a KeyboardInterrupt."""
    (tmp_path / "landing.py").write_text(
        "import sys\nfrom harness import stops\n"
        "def body():\n    exec('import signal; signal.raise_signal(signal.SIGINT)')\n"
        "    return 0\n"
        "sys.exit(stops.guarded('cmd', body))\n")
    proc = subprocess.run([sys.executable, "-m", "landing"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (130, LINE.format("SIGINT"))
