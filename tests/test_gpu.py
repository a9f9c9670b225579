"""What only a GPU shows (marked gpu, skipped without CUDA): bf16 packs match fp32 packs,
channels_last end to end, no host sync in a packed step; and the dry run of
scripts/gpu-check.sh on a CPU (slow, in CI)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tarfile

import pytest
import torch
from torch import nn

from harness.config import compose
from harness.config import job as cf
from harness.train import data as data_mod
from harness.train import loop as train_mod
from tests.conftest import CLI_ENV, ROOT, fashion_mnist_root

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def pack_cells(precision: str, model: str = "resnet20", packs: int = 4,
               epochs: int = 2) -> list[cf.Config]:
    (cfg,) = compose.cells([
        f"model={model}", "dataset=synthetic", "dataset.train_subset=2048",
        "dataset.test_subset=512", "optimizer=sgd", "optimizer.lr=0.05", "decay=decoupled",
        "decay.weight_decay=5e-5", f"train.epochs={epochs}", "train.batch_size=128",
        "train.device=cuda", f"train.precision={precision}", "logger=none"])
    return [dataclasses.replace(cfg, optimizer=dataclasses.replace(cfg.optimizer, lr=lr))
            for lr in (0.05 * 2.0 ** -k for k in range(packs))]


def synthetic(device: torch.device) -> data_mod.Dataset:
    return data_mod.load_dataset("synthetic", train_subset=2048, test_subset=512, device=device)


@pytest.mark.gpu
@cuda
def test_bf16_pack_matches_fp32_pack() -> None:
    device = torch.device("cuda")
    ds = synthetic(device)
    runs = {p: list(train_mod.train(pack_cells(p), ds, device)) for p in ("bf16", "fp32")}
    for bf16, fp32 in zip(runs["bf16"], runs["fp32"], strict=True):
        for a, b in zip(bf16, fp32, strict=True):
            assert a.metrics.train_loss == pytest.approx(b.metrics.train_loss, rel=0.05)
            assert abs(a.metrics.train_error - b.metrics.train_error) < 0.05


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("model", ["resnet20", "shake_shake_26_2x64d"])
def test_channels_last_end_to_end(model: str) -> None:
    """In a real CUDA train step every conv reads channels_last, and the params, grads and
    optimizer moments stay channels_last."""
    device = torch.device("cuda")
    run = train_mod.setup(pack_cells("bf16", model), synthetic(device), device)
    seen: list[bool] = []
    for module in run.model.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_pre_hook(lambda m, inputs: seen.append(
                inputs[0].is_contiguous(memory_format=torch.channels_last)))
    x, y = next(data_mod.train_batches(run.ds, 128, run.generator))
    for _ in range(2):
        run.optimizer.zero_grad(set_to_none=True)
        train_mod.train_step(run, x.contiguous(memory_format=torch.channels_last), y)
    assert seen and all(seen)
    for p in run.model.parameters():
        if p.dim() == 4:
            assert p.is_contiguous(memory_format=torch.channels_last)
            for value in run.optimizer.state[p].values():
                if value.dim() == 4:
                    assert value.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.gpu
@cuda
def test_packed_step_does_not_sync() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_check import audit

    assert audit(torch.device("cuda")) == 0


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path) -> None:
    """Every stage of scripts/gpu-check.sh, tiny, on a CPU: the tarball holds each log."""
    fashion_mnist_root()
    env = dict(os.environ, **CLI_ENV, PY=sys.executable)
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh"), "--out",
                             str(tmp_path), "--dry-run"], cwd=ROOT, env=env, text=True,
                            capture_output=True, timeout=900)
    stages = (tmp_path / "logs" / "stages.txt").read_text()
    assert result.returncode == 0, stages + result.stdout
    names = [line.split()[0] for line in stages.splitlines()]
    assert names == ["install", "tests", "audit", "bench", "study"]
    with tarfile.open(tmp_path / "gpu-check.tar.gz") as tar:
        members = set(tar.getnames())
    assert {f"./logs/{n}.log" for n in names} <= members
    assert "./bench/cpu.json" in members
    compare = (tmp_path / "logs" / "study.log").read_text()
    assert compare.count("loss ok, error ok") == 2
