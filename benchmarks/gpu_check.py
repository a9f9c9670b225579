"""The Python stages of scripts/gpu-check.sh: a sync audit of packed train steps, and the
comparison of a GPU study's parquet files with a CPU rerun of some of its cells.

    python benchmarks/gpu_check.py audit [--device cuda] [--model M]  # exit 1 on a sync
    python benchmarks/gpu_check.py cells RESULTS_DIR STUDY N  # N cells' overrides, one a line
    python benchmarks/gpu_check.py compare GPU_RUNS CPU_RUNS  # exit 1 beyond bf16 tolerance
    python benchmarks/gpu_check.py summary BENCH_JSON...  # targets met or not, GPU-hours

summary: benchmarks/bench_summary.py's lines for each bench report (one cut short by a timeout
too): each speed target and whether it is met, the pack against the vmap ensemble, grouped vs
dense convs, the estimated GPU-hours of fig2_decay and fig2_lite at the measured rates.

audit: a pack of 4 cells of --model (ResNet-20 unless given; Adam, decoupled, cosine) takes 2
warm-up steps, then 5 steps under torch.cuda.set_sync_debug_mode("error") (any host-device
sync raises). On a CPU (the dry run) the same steps run under a dispatch mode that fails on
.item() or a tensor built from host data: the CPU stand-in for a sync.

compare: every epoch of every CPU run must match the GPU run of the same run_id: train and
test loss within 5% relative, errors within 0.03 absolute (bf16 autocast against fp32 over a
few epochs; a wrong lr, lambda or slice is off by far more).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

HOST_READS = {"aten._local_scalar_dense.default", "aten.lift_fresh.default",
              "aten.lift_fresh_copy.default"}
LOSS_RTOL, ERROR_ATOL = 0.05, 0.03


class _HostReads(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func) in HOST_READS:
            self.reads.append(str(func))
        return func(*args, **(kwargs or {}))


def audit(device: torch.device, model: str = "resnet20", packs: int = 4) -> int:
    from harness.config import compose
    from harness.train import data as data_mod
    from harness.train import loop as train_mod

    (cfg,) = compose.cells([
        f"model={model}", "dataset=synthetic", "dataset.train_subset=1024",
        "dataset.test_subset=128", "optimizer=adam", "optimizer.lr=1e-3", "decay=decoupled",
        "decay.weight_decay=1e-4", "schedule=cosine", "train.epochs=1", "train.batch_size=128",
        f"train.device='{device}'", "logger=none"])
    cells = [dataclasses.replace(cfg, optimizer=dataclasses.replace(cfg.optimizer, lr=lr))
             for lr in (1e-3 * 2.0 ** -k for k in range(packs))]
    ds = data_mod.load_dataset("synthetic", train_subset=1024, test_subset=128, device=device)
    run = train_mod.setup(cells, ds, device)
    batches = list(data_mod.train_batches(ds, 128, run.generator))
    if device.type == "cuda":
        batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
    for x, y in batches[:2]:
        run.optimizer.zero_grad(set_to_none=True)
        train_mod.train_step(run, x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for x, y in batches[2:7]:
                run.optimizer.zero_grad(set_to_none=True)
                train_mod.train_step(run, x, y)
        except RuntimeError as err:
            print(f"sync audit: FAILED: {err}".splitlines()[0])
            return 1
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
    else:
        with _HostReads() as mode:
            for x, y in batches[2:7]:
                run.optimizer.zero_grad(set_to_none=True)
                train_mod.train_step(run, x, y)
        if mode.reads:
            print(f"sync audit: FAILED: host reads {sorted(set(mode.reads))}")
            return 1
    print(f"sync audit: ok: 5 steps of a {model} pack of {packs} on {device} without a sync")
    return 0


def cells(results: Path, study: str, n: int) -> int:
    """The lr and weight_decay overrides of the first n cells (by run_id) of a study."""
    import pandas as pd

    runs = sorted((results / study / "runs").glob("*.parquet"))[:n]
    for path in runs:
        row = pd.read_parquet(path).iloc[0]
        lr, weight_decay = float(row["lr"]), float(row["weight_decay"])
        print(f"optimizer.lr={lr!r} decay.weight_decay={weight_decay!r}")
    return 0 if len(runs) == n else 1


def compare(gpu: Path, cpu: Path) -> int:
    import numpy as np
    import pandas as pd

    cpu_runs = sorted(cpu.glob("*.parquet"))
    if not cpu_runs:
        print(f"compare: FAILED: no parquet files in {cpu}")
        return 1
    bad = 0
    for path in cpu_runs:
        other = gpu / path.name
        if not other.exists():
            print(f"compare: FAILED: {path.name} has no GPU run in {gpu}")
            return 1
        a, b = pd.read_parquet(other), pd.read_parquet(path)
        losses = ["train_loss", "test_loss"]
        ok_loss = np.allclose(a[losses], b[losses], rtol=LOSS_RTOL, equal_nan=True)
        errors = ["train_error", "test_error"]
        ok_error = np.allclose(a[errors], b[errors], rtol=0, atol=ERROR_ATOL, equal_nan=True)
        same = len(a) == len(b) and (a["status"] == b["status"]).all()
        print(f"compare: {path.stem}: epochs {len(a)} vs {len(b)}, loss "
              f"{'ok' if ok_loss else 'DIFFERS'}, error {'ok' if ok_error else 'DIFFERS'}, "
              f"gpu test_error {a['test_error'].iloc[-1]:.4f} cpu {b['test_error'].iloc[-1]:.4f}")
        bad += not (ok_loss and ok_error and same)
    return 1 if bad else 0


def summary(reports: list[Path]) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import bench_summary

    for path in reports:
        report = json.loads(path.read_text())
        print(f"bench summary of {path.name} ({report['device']}, "
              f"{len(report['results'])} rows):")
        for line in bench_summary.summary_lines(report):
            print(f"  {line}")
    return 0 if reports else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("audit")
    a.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a.add_argument("--model", default="resnet20", help="registry key (the dry run: small)")
    c = sub.add_parser("cells")
    c.add_argument("results", type=Path)
    c.add_argument("study")
    c.add_argument("n", type=int)
    m = sub.add_parser("compare")
    m.add_argument("gpu", type=Path)
    m.add_argument("cpu", type=Path)
    r = sub.add_parser("summary")
    r.add_argument("reports", type=Path, nargs="*")
    args = parser.parse_args(argv)
    if args.command == "audit":
        return audit(torch.device(args.device), args.model)
    if args.command == "summary":
        return summary(args.reports)
    if args.command == "cells":
        return cells(args.results, args.study, args.n)
    return compare(args.gpu, args.cpu)


if __name__ == "__main__":
    sys.exit(main())
