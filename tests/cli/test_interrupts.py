"""SIGINT / SIGTERM to a real `harness run` mid-cell (issue 22): one line on stderr, exit
130 / 143, no ledger left, the checkpoint kept, and the same command resumes and completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import CLI_ENV, TINY, harness_cli

pytestmark = pytest.mark.slow
CELL = [*TINY, "study=s", "run.results_dir=results", "train.epochs=3",
        "dataset.train_subset=1024"]


def started_mid_cell(tmp_path) -> tuple[subprocess.Popen, object]:
    """A real `harness run` of CELL, returned once its first checkpoint exists (or it ended,
    or 300 s passed), with the checkpoints folder."""
    env = dict(os.environ, **CLI_ENV)
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", *CELL], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpts = tmp_path / "results/s/checkpoints"
    deadline = time.time() + 300
    while not list(ckpts.glob("*.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    return proc, ckpts


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_cell_is_one_line_and_the_rerun_resumes(tmp_path, sig, code):
    proc, ckpts = started_mid_cell(tmp_path)
    assert list(ckpts.glob("*.pt")), "no checkpoint appeared"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, out + err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        f"harness run: interrupted ({sig.name}); run the same command to resume"], err
    assert not (tmp_path / "results" / ".outcomes").exists()
    assert list(ckpts.glob("*.pt")), "the checkpoint is how the rerun resumes"
    again = harness_cli(["run", *CELL], tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resuming after epoch" in again.stdout
    assert "harness run: 1 cells: 1 completed" in again.stdout


@pytest.mark.parametrize("first,second,code", [(signal.SIGINT, signal.SIGINT, 130),
                                               (signal.SIGTERM, signal.SIGINT, 143)])
def test_a_second_signal_while_stopping_is_still_one_line(tmp_path, first, second, code):
    """Ctrl-C pressed twice, or a scheduler's TERM and then an INT, while the first one is
    still unwinding: the same one line and exit code as one signal, never a traceback."""
    proc, _ = started_mid_cell(tmp_path)
    proc.send_signal(first)
    for _ in range(20):  # the second signal lands somewhere in the first one's unwinding
        time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(second)
    out, err = proc.communicate(timeout=120)
    # the first signal handled names the line: the first sent, or SIGINT when both were
    # pending together (Python handles pending signals in number order)
    handled = first if proc.returncode == code else signal.SIGINT
    assert proc.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[handled], out + err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err.strip().splitlines() == [
        f"harness run: interrupted ({handled.name}); run the same command to resume"], err
    assert not (tmp_path / "results" / ".outcomes").exists()
