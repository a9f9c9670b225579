"""Hydra launchers end to end: `python -m harness run -m hydra/launcher=...` in a subprocess.

- submitit_local: every job is a local process; all land in parquet.
- submitit_slurm: a real single-node Slurm cluster (scripts/slurm-local.sh, Debian slurm-wlm +
  munge, as root). In CI (CI set) a cluster that cannot start FAILS the test; elsewhere it
  skips with the reason. The jobs run the submitting interpreter (submitit pickles the Hydra
  job and runs `sys.executable -m submitit.core._submit`), here .venv's python.
- requeue: a USR2 (what submitit treats as preemption) makes the job checkpoint the Hydra call,
  `scontrol requeue` itself and exit; the requeued job skips done cells and resumes the cell
  from its per-epoch checkpoint.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.conftest import CLI_ENV, ROOT, TINY, harness_cli

LRS = (0.003, 0.01)
SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug",
         "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=2"]


def tiny(tmp_path: Path, study: str, *extra: str) -> list[str]:
    """conftest.TINY (one epoch) with `extra` replacing the keys it names; results in tmp."""
    extra = ("train.epochs=1", *extra)
    keys = {o.split("=", 1)[0] for o in extra}
    base = [o for o in TINY if o.split("=", 1)[0] not in keys]
    return [*base, f"study={study}", f"run.results_dir={tmp_path / 'results'}", *extra]


def landed(tmp_path: Path, study: str) -> pd.DataFrame:
    """Every parquet row of `study`, with the file stem next to each row."""
    files = sorted((tmp_path / "results" / study / "runs").glob("*.parquet"))
    return pd.concat([pd.read_parquet(f).assign(file=f.stem) for f in files], ignore_index=True)


def assert_sweep_landed(proc: subprocess.CompletedProcess, tmp_path: Path, study: str,
                        epochs: int = 1) -> pd.DataFrame:
    """Exit 0, one completed parquet per swept lr, every epoch, learning above chance."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"{len(LRS)} cells: {len(LRS)} completed" in proc.stdout
    df = landed(tmp_path, study)
    assert sorted(df["lr"].unique()) == list(LRS)
    assert (df["status"] == "completed").all()
    assert (df["run_id"] == df["file"]).all() and df["run_id"].nunique() == len(LRS)
    assert sorted(df["epoch"]) == sorted(list(range(1, epochs + 1)) * len(LRS))
    assert (df["test_error"] < 0.85).all(), df[["lr", "epoch", "test_error"]]  # chance: 0.9
    return df


def start_slurm() -> None:
    """Start the local cluster; fail in CI, skip elsewhere, when it cannot start."""
    why = ""
    if shutil.which("sbatch") is None:
        why = "Slurm is not installed (apt-get install -y slurm-wlm munge)"
    else:
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "slurm-local.sh"), "start"],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode:
            why = f"scripts/slurm-local.sh start failed:\n{proc.stdout}{proc.stderr}"
    if why and os.environ.get("CI"):
        pytest.fail(why)
    if why:
        pytest.skip(why)


def job_logs(tmp_path: Path) -> str:
    return "".join(p.read_text(errors="replace")
                   for p in sorted(tmp_path.glob("outputs/**/.submitit/**/*_log.*")))


@pytest.mark.slow
def test_submitit_local_sweep_lands_every_cell(tmp_path):
    lrs = "optimizer.lr=" + ",".join(map(str, LRS))
    proc = harness_cli(["run", "-m", "hydra/launcher=submitit_local",
                        "hydra.launcher.timeout_min=10", *tiny(tmp_path, "local", lrs)],
                       tmp_path, timeout=600)
    assert_sweep_landed(proc, tmp_path, "local")
    assert len(list(tmp_path.glob("outputs/local/sweep-*/*/.hydra/overrides.yaml"))) == len(LRS)


@pytest.mark.slow
def test_submitit_slurm_sweep_runs_on_a_real_cluster(tmp_path):
    start_slurm()
    name = f"harness-test-{uuid.uuid4().hex[:8]}"
    lrs = "optimizer.lr=" + ",".join(map(str, LRS))
    try:
        proc = harness_cli(["run", "-m", *SLURM, f"hydra.launcher.name={name}",
                            *tiny(tmp_path, "slurm", lrs)], tmp_path, timeout=900)
    finally:
        subprocess.run(["scancel", f"--name={name}"], capture_output=True, timeout=60)
    assert_sweep_landed(proc, tmp_path, "slurm")
    [script] = tmp_path.glob("outputs/slurm/sweep-*/.submitit/*/*_submission.sh")
    text = script.read_text()
    assert "#SBATCH --partition=debug" in text and "#SBATCH --array=0-1%" in text
    srun = next(line for line in text.splitlines() if line.startswith("srun "))
    assert f"{shlex.quote(sys.executable)} -u -m submitit.core._submit" in srun
    assert job_logs(tmp_path).count("Job completed successfully") >= len(LRS)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
def test_preempted_slurm_job_requeues_and_resumes_from_its_checkpoint(tmp_path):
    start_slurm()
    name = f"harness-test-{uuid.uuid4().hex[:8]}"
    args = [sys.executable, "-m", "harness", "run", "-m", *SLURM, f"hydra.launcher.name={name}",
            "hydra.launcher.timeout_min=60",  # signalled long before 80%: preempted, not timed out
            *tiny(tmp_path, "requeue", "train.epochs=4", "optimizer.lr=0.01")]
    checkpoints = tmp_path / "results" / "requeue" / "checkpoints"
    log = (tmp_path / "harness.log").open("w")
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, **CLI_ENV))
    try:
        wait_for(lambda: any(checkpoints.glob("*.pt")) or proc.poll() is not None, 300,
                 "the epoch-1 checkpoint")
        assert proc.poll() is None, (tmp_path / "harness.log").read_text()[-3000:]
        job = subprocess.run(["squeue", "-h", f"--name={name}", "-o", "%i"], check=True,
                             capture_output=True, text=True).stdout.split()[0]
        subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=60)
        assert proc.wait(timeout=600) == 0, (tmp_path / "harness.log").read_text()[-3000:]
    finally:
        proc.kill()
        subprocess.run(["scancel", f"--name={name}"], capture_output=True, timeout=60)
        log.close()
    logs = job_logs(tmp_path)
    assert "this job is preempted" in logs and "Requeued job" in logs, logs[-3000:]
    assert "resuming after epoch" in logs, logs[-3000:]
    df = landed(tmp_path, "requeue")
    assert df["epoch"].tolist() == [1, 2, 3, 4] and (df["status"] == "completed").all()
    assert not any(checkpoints.glob("*.pt"))


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_submitit_local_pins_each_worker_to_its_own_gpu(tmp_path):
    # submitit_local shows every job GPUs 0..gpus_per_node-1; run.worker picks one of them.
    proc = harness_cli(["run", "-m", "hydra/launcher=submitit_local",
                        "hydra.launcher.gpus_per_node=2", "hydra.launcher.timeout_min=10",
                        *tiny(tmp_path, "gpus", "run.worker=0,1", "seed=${run.worker}",
                              "train.device=cuda:${run.worker}", "optimizer.lr=0.01")],
                       tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    df = landed(tmp_path, "gpus")
    assert (df["status"] == "completed").all()
    assert dict(zip(df["seed"], df["device"], strict=True)) == {0: "cuda:0", 1: "cuda:1"}
