"""The adversarial campaign: a 2x3 grid under random SIGKILLs, SIGTERMs and SIGINTs, with a
second worker sharing the grid in some attempts and one worker forcing a retrain, a corrupted
checkpoint and a foreign parquet file planted in between, ends as if nothing had happened."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import CLI_ENV, TINY, harness_cli
from tests.wandb_reader import history

pytestmark = pytest.mark.slow
GRID = ["optimizer.lr=[0.01,0.003]", "decay.weight_decay=[0,0.0001,0.001]", "train.epochs=3",
        "study=camp"]
METRICS = ["epoch", "step", "lr_multiplier", "weight_decay", "train_loss", "train_error",
           "test_loss", "test_error", "test_error_top5", "param_norm"]
KILLS = 10
PROGRESS = ("] epoch ", "] recorded ")  # an epoch trained or a cell recorded in this attempt


STOPPED = {signal.SIGTERM: 143, signal.SIGINT: 130}  # a signal's exit code and its one line


def args(results: str, logger: str, *extra: str) -> list[str]:
    return ["run", *TINY, *GRID, f"logger={logger}", f"run.results_dir={results}", *extra]


def runs(study: Path) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_parquet(p) for p in (study / "runs").glob("*.parquet")}


def wait_for_work(log: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if any(s in log.read_text() for s in PROGRESS):
            return
        time.sleep(0.1)


def plant_corrupted_checkpoint(study: Path) -> bool:
    for ckpt in (study / "checkpoints").glob("*.pt"):
        raw = bytearray(ckpt.read_bytes())
        raw[len(raw) // 2] ^= 0x20
        ckpt.write_bytes(bytes(raw))
        return True
    return False


def plant_foreign_parquet(study: Path, run_ids: list[str]) -> bool:
    done = sorted((study / "runs").glob("*.parquet"))
    todo = [r for r in run_ids if not (study / "runs" / f"{r}.parquet").exists()]
    if not done or not todo:
        return False
    shutil.copy(done[0], study / "runs" / f"{todo[0]}.parquet")
    return True


def test_random_kills_and_planted_files_end_as_an_uninterrupted_run(tmp_path):
    ref = harness_cli(args("ref", "none"), tmp_path)
    assert ref.returncode == 0 and "6 cells: 6 completed" in ref.stdout, ref.stderr
    reference = runs(tmp_path / "ref" / "camp")
    run_ids = sorted(reference)
    study = tmp_path / "results" / "camp"
    rng = random.Random(1711)
    env = dict(os.environ, **CLI_ENV)
    outputs, forced, planted = [], [], {"checkpoint": False, "parquet": False}
    signals = []
    for kill in range(KILLS):
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
        signals.append(sig)
        workers = 2 if kill % 3 == 1 else 1   # a second worker shares the grid (claims)
        force = kill == 1                      # its first worker retrains every cell
        procs, logs = [], []
        for w in range(workers):
            extra = [f"run.worker={w}"] + (["run.force=true"] if force and w == 0 else [])
            logs.append(tmp_path / f"attempt{kill}-{w}.log")
            with open(logs[-1], "w") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "harness", *args("results", "wandb", *extra)],
                    cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True))
        if kill % 4 != 3:  # most signals land after some progress, however busy the box
            wait_for_work(logs[0], procs[0])
        # a TERM or INT lands after the interpreter has started (the command's guard is in
        # place from its first import on); a KILL may land anywhere
        time.sleep(rng.uniform(0.0 if sig == signal.SIGKILL else 0.5, 2.0))
        for proc in procs:
            if sig == signal.SIGKILL:
                os.killpg(proc.pid, signal.SIGKILL)
            elif proc.poll() is None:
                proc.send_signal(sig)  # to the command, as a user's Ctrl-C or a scheduler does
        for proc, log in zip(procs, logs, strict=True):
            code = proc.wait(timeout=300)
            text = log.read_text()
            if sig in STOPPED and code == STOPPED[sig]:
                assert "Traceback" not in text, text[-3000:]
                assert text.rstrip().endswith(f"harness run: interrupted ({sig.name}); run "
                                              "the same command to resume"), text[-3000:]
            elif sig in STOPPED:
                assert code == 0, text[-3000:]  # it had finished before the signal came
            (forced if force and log is logs[0] else outputs).append(text)
        if kill >= 2 and not planted["checkpoint"]:
            planted["checkpoint"] = plant_corrupted_checkpoint(study)
        if kill >= 4 and not planted["parquet"]:
            planted["parquet"] = plant_foreign_parquet(study, run_ids)
    assert planted == {"checkpoint": True, "parquet": True}, "the kills left nothing to plant"
    assert set(signals) == {signal.SIGKILL, signal.SIGTERM, signal.SIGINT}
    final = harness_cli(args("results", "wandb"), tmp_path)
    outputs.append(final.stdout + final.stderr)
    assert final.returncode == 0, final.stderr
    assert "checksum mismatch" in "".join(outputs + forced)
    assert "is not a final record of run" in "".join(outputs + forced)
    done = runs(study)
    assert sorted(done) == run_ids
    for run_id, df in done.items():
        assert (df.status == "completed").all() and (df.run_id == run_id).all()
        pd.testing.assert_frame_equal(df[METRICS], reference[run_id][METRICS])
        recorded = sum(o.count(f"recorded completed: {study / 'runs' / run_id}.parquet")
                       for o in outputs)
        assert recorded <= 1, f"{run_id} recorded completed {recorded} times"  # unforced
        [wandb_run] = (study / "wandb").glob(f"offline-run-*-{run_id}")
        rows = history(wandb_run / f"run-{run_id}.wandb")
        assert [r["epoch"] for r in rows] == [1, 2, 3]
        assert [r["train_loss"] for r in rows] == df.train_loss.tolist()
    assert not list((study / "checkpoints").glob("*"))
    assert not list((study / "runs").glob(".*.tmp"))
    report = harness_cli(["report", "camp", "--results-dir", "results"], tmp_path)
    assert report.returncode == 0, report.stderr
    assert (study / "report" / "report.md").exists()
