"""What only a GPU shows (marked gpu, skipped without CUDA): bf16 packs match fp32 packs,
channels_last end to end, no host sync in a packed step; and the dry run of
scripts/gpu-check.sh on a CPU (slow, in CI)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from harness.config import compose
from harness.config import job as cf
from harness.train import data as data_mod
from harness.train import loop as train_mod
from tests.conftest import CLI_ENV, ROOT, TINY, harness_cli

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


def _copy_tree(src: Path, dst: Path) -> None:
    """The files a device call sends: tracked and untracked-not-ignored (the working tree)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=src,
                            capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        if (src / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / name, dst / name)


def _without_hydra(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python lacks hydra and omegaconf (as the device's does) until
    scripts/gpu-check.sh installs the carried wheels ahead of this blocker on PYTHONPATH."""
    for name in ("hydra", "omegaconf"):
        (tmp_path / "blocker" / name).mkdir(parents=True)
        (tmp_path / "blocker" / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not installed here')\n")
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_DATA"}
    return dict(env, **CLI_ENV, PY=sys.executable, PYTHONPATH=str(tmp_path / "blocker"),
                GPU_CHECK_SITE=str(tmp_path / "site"))


def _out_files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if not p.is_dir())


@pytest.mark.slow
def test_gpu_check_runs_from_a_prepared_copy_as_on_the_device(tmp_path) -> None:
    """--prepare here fills an ignored .carry/ and prints the device call; a copy of the tree
    with .carry/ and no ../shared beside it, in a Python without hydra, then runs every stage
    (tiny, on a CPU) inside its budget, and $OUT holds what a device call brings back: at most
    8 files, none more than 2 folders down, plain names. Without the wheels it stops at once."""
    shared = ROOT.parent / "shared"
    if not (shared / "device-wheels").is_dir():  # CI has shared/ beside its clone
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"no {shared}/device-wheels")
    here = tmp_path / "here" / "repo"
    _copy_tree(ROOT, here)
    subprocess.run(["git", "init", "-q"], cwd=here, check=True)
    prepared = subprocess.run(["bash", "scripts/gpu-check.sh", "--prepare", "--shared",
                               str(shared)], cwd=here, capture_output=True, text=True)
    assert prepared.returncode == 0, prepared.stderr
    assert "/.carry/" in (here / ".git" / "info" / "exclude").read_text().splitlines()
    assert sorted(p.name for p in (here / ".carry" / "wheels").iterdir()) == sorted(
        p.name for p in (shared / "device-wheels").glob("*.whl"))
    assert len(list((here / ".carry" / "fashion-mnist").glob("*-ubyte.gz"))) == 4
    status = subprocess.run(["git", "status", "--porcelain", "--ignored=no"], cwd=here,
                            capture_output=True, text=True).stdout
    assert ".carry" not in status
    assert ("device call: run(command='bash scripts/gpu-check.sh --out \"$OUT\"', "
            "carry=['.carry'], timeout_s=330)") in prepared.stdout
    device = tmp_path / "device" / "repo"  # no shared/ beside it
    shutil.copytree(here, device, ignore=shutil.ignore_patterns(".git"))
    env = _without_hydra(tmp_path)
    assert subprocess.run([sys.executable, "-c", "import hydra"], env=env).returncode != 0
    out = tmp_path / "out"
    tic = time.perf_counter()
    result = subprocess.run(["bash", "scripts/gpu-check.sh", "--dry-run", "--budget", "280"],
                            cwd=device, env=dict(env, OUT=str(out)), text=True,
                            capture_output=True, timeout=400)
    seconds = time.perf_counter() - tic
    summary = (out / "summary.txt").read_text()
    assert result.returncode == 0, summary + (out / "stages.log").read_text()[-3000:]
    assert seconds < 280 + 20, summary
    assert [line.split()[0] for line in summary.splitlines() if " rc=0 " in line] == [
        "install", "tests", "audit", "bench", "study"]
    assert "imports ok: hydra 1.3" in (out / "stages.log").read_text()
    files = _out_files(out)
    assert files == ["bench/cpu.json", "gpu-check.tar.gz", "stages.log", "summary.txt"]
    assert all(len(Path(f).parts) <= 3 and re.fullmatch(r"[A-Za-z0-9._/-]+", f)
               for f in files)
    assert len(json.loads((out / "bench" / "cpu.json").read_text())["results"]) == 9
    assert "target packed resnet20 >= 3x its best single-model loop: " in summary
    assert "fig2_lite: 336 cells, 504,000,000 images of resnet20" in summary
    with tarfile.open(out / "gpu-check.tar.gz") as tar:
        assert {"./summary.txt", "./stages.log"} <= set(tar.getnames())
    assert (out / "stages.log").read_text().count(": 1 epochs, within tolerance;") == 2
    shutil.rmtree(device / ".carry" / "wheels")
    bare = tmp_path / "bare"
    result = subprocess.run(["bash", "scripts/gpu-check.sh", "--dry-run", "--out", str(bare)],
                            cwd=device, env=dict(env, GPU_CHECK_SITE=str(tmp_path / "site2")),
                            text=True, capture_output=True, timeout=120)
    assert result.returncode == 1
    assert "stopped: the install stage failed" in (bare / "summary.txt").read_text()
    assert "hydra is not installed here" in (bare / "stages.log").read_text()
    assert _out_files(bare) == ["gpu-check.tar.gz", "stages.log", "summary.txt"]


def test_the_study_comparison_passes_a_rerun_and_fails_a_lambda_swapped_between_cells(
        tmp_path, capsys) -> None:
    """gpu_check compare on two real CPU studies of the same two cells: a rerun is within the
    stated tolerance; the same runs with their lambdas trained the other way round (each run
    filed under the other cell's run_id, as a pack slicing lambda wrongly would record them)
    fail it, in the weight norm the swap moves."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_check import compare

    for name in ("a", "b"):
        done = harness_cli(["run", "-m", *TINY, "decay.weight_decay=0.0,0.2", "study=cmp",
                            f"run.results_dir={name}"], tmp_path)
        assert done.returncode == 0, done.stderr
    a, b = tmp_path / "a/cmp/runs", tmp_path / "b/cmp/runs"
    assert compare(a, b) == 0
    assert "within tolerance" in capsys.readouterr().out
    first, second = sorted(b.glob("*.parquet"))
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    for src, dst in ((first, second), (second, first)):
        df = pd.read_parquet(src)
        df["weight_decay"] = pd.read_parquet(dst)["weight_decay"].to_numpy()
        df.to_parquet(swapped / dst.name)  # trained with src's lambda, recorded as dst
    assert compare(a, swapped) == 1
    out = capsys.readouterr().out
    assert out.count("DIFFERS in param_norm") == 2, out
