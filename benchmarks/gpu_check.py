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

compare: every epoch of every CPU run must match the GPU run of the same run_id. Both saw the
same batches in the same order with the same augmentation (harness.train.data draws them from
one CPU generator for every device), so what differs is arithmetic: bf16 autocast against fp32
over a few epochs. The stated tolerance: the schedule and the lambda used (lr_multiplier,
weight_decay) equal to float precision; the weight norm within 1% relative (a lambda swapped
between two cells, or a wrong slice of a pack, moves it by far more); train and test loss
within 3% relative; errors within 0.02 absolute.
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
EXACT = ("epoch", "step", "lr_multiplier", "weight_decay")  # computed, not trained
TOLERANCE = {"param_norm": (0.01, 0.0), "train_loss": (0.03, 0.0), "test_loss": (0.03, 0.0),
             "train_error": (0.0, 0.02), "test_error": (0.0, 0.02)}  # (rtol, atol), bf16


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
    """The lr and weight_decay overrides of n cells of a study with distinct weight decays
    (the first by run_id of each), so that lambdas swapped between cells would show."""
    import pandas as pd

    runs, seen = [], set()
    for path in sorted((results / study / "runs").glob("*.parquet")):
        wd = float(pd.read_parquet(path, columns=["weight_decay"]).iloc[0, 0])
        if wd not in seen and len(runs) < n:
            seen.add(wd)
            runs.append(path)
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
        if len(a) != len(b) or not (a["status"].to_numpy() == b["status"].to_numpy()).all():
            print(f"compare: {path.stem}: DIFFERS: {len(a)} GPU epochs "
                  f"({a['status'].iloc[-1]}) against {len(b)} CPU ({b['status'].iloc[-1]})")
            bad += 1
            continue
        differs = [c for c in EXACT if not np.allclose(a[c].astype(float), b[c].astype(float),
                                                       rtol=1e-6, atol=0, equal_nan=True)]
        differs += [c for c, (rtol, atol) in TOLERANCE.items()
                    if not np.allclose(a[c].astype(float), b[c].astype(float), rtol=rtol,
                                       atol=atol, equal_nan=True)]
        print(f"compare: {path.stem}: {len(a)} epochs, "
              f"{'DIFFERS in ' + ', '.join(differs) if differs else 'within tolerance'}; "
              f"gpu test_error {a['test_error'].iloc[-1]:.4f} cpu {b['test_error'].iloc[-1]:.4f}, "
              f"param_norm {a['param_norm'].iloc[-1]:.3f} vs {b['param_norm'].iloc[-1]:.3f}")
        bad += bool(differs)
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
