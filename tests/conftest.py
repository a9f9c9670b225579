"""Shared test helpers: the repository root, the real Fashion-MNIST, and a CLI runner.

The real Fashion-MNIST is found as the harness finds it on a user's machine: $HARNESS_DATA
(CI's .ci/run points it at the datasets copied beside the clone), ./data, or Debian's
/usr/share/datasets/fashion-mnist.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A tiny synthetic cell: trains in a couple of seconds on one CPU core.
TINY = ["dataset=synthetic", "model=small", "dataset.train_subset=512",
        "dataset.test_subset=256", "train.epochs=2", "train.batch_size=64", "train.device=cpu",
        "logger=none", "logger.progress=line", "optimizer=adam", "decay=decoupled",
        "optimizer.lr=0.01"]


@pytest.fixture(autouse=True)
def _own_wandb_per_process(monkeypatch):
    """Each `harness` process a test starts gets its own W&B service: once this process has
    used wandb it exports WANDB_SERVICE, which children would otherwise share (and a child
    killed mid-init leaves its run id "in use" there). Whether W&B is down is no process
    state to reset: each command has its own harness.sweep.recorder.WandbMirror."""
    monkeypatch.delenv("WANDB_SERVICE", raising=False)


@functools.cache
def hyper(optimizer: str) -> dict:
    """The hyperparameters configs/optimizer/<optimizer>.yaml gives (their one home)."""
    from harness.config import compose

    return dict(compose.cells([f"optimizer={optimizer}"])[0].optimizer.hyper)


def make_optimizer(params, optimizer: str, decay: str, lr, weight_decay, **changes):
    """harness.train.optim.build_optimizer with the configs' hyperparameters, updated by
    `changes`."""
    from harness.train.optim import OPTIMIZERS, build_optimizer

    configured = hyper(optimizer) if optimizer in OPTIMIZERS else {}  # else: build's error
    return build_optimizer(params, optimizer, decay, lr, weight_decay,
                           **{**configured, **changes})


CLI_ENV = {"PYTHONUNBUFFERED": "1", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}


def fashion_mnist_root() -> Path:
    """The folder of the real Fashion-MNIST files; skip outside CI when absent, fail in CI."""
    from harness.train.data import search_dirs
    from harness.train.datasets import idx

    dirs = search_dirs("fashion_mnist")
    try:
        return idx.locate(dirs)["train-images-idx3-ubyte"].parent
    except FileNotFoundError:
        why = f"real Fashion-MNIST not in {', '.join(map(str, dirs))} (set HARNESS_DATA)"
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def harness_cli(args: list[str], cwd: Path, timeout: float = 600,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m harness ...` in a fresh process, as a user would (one CPU thread: jobs
    the command starts in parallel must not fight over 2 cores with spinning OpenMP threads)."""
    env = dict(os.environ, **CLI_ENV, **(env or {}))
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
