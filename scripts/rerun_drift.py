"""How far a committed study moves on this machine: rerun each panel's best seed-0 cell with
the committed command into a scratch results directory and compare the final errors.

A different CPU, thread count or torch build rounds floating point differently; after a few
hundred steps the trajectories part like two seeds. This measures that drift for REPRODUCTION.md.

Usage: OMP_NUM_THREADS=1 .venv/bin/python scripts/rerun_drift.py fig2_lite_cpu [overrides...]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from harness.analysis.frames import best_cells, cells, load_runs


def final(path: Path) -> pd.Series:
    df = pd.read_parquet(path)
    return df[df["epoch"] == df["epoch"].max()].iloc[0]


def main(study: str, overrides: list[str]) -> None:
    committed = Path("results") / study / "runs"
    runs, _ = load_runs(committed.parent)
    scratch = Path(tempfile.mkdtemp(prefix="rerun-drift-"))
    for _, row in best_cells(cells(runs[runs["seed"] == 0])).iterrows():
        subprocess.run([sys.executable, "-m", "harness", "run", f"+experiment={study}",
                        f"panel={row.optimizer}_{row.decay}", f"optimizer.lr={row.lr!r}",
                        f"decay.weight_decay={row.lam!r}", "seed=0", f"run.results_dir={scratch}",
                        "logger=none", "logger.progress=none", *overrides],
                       check=True, stdout=subprocess.DEVNULL)
    rows = []
    for path in sorted((scratch / study / "runs").glob("*.parquet")):
        a, b = final(committed / path.name), final(path)
        rows.append({"cell": f"{a['optimizer']}/{a['decay']} lr={a['lr']:g}",
                     "committed (%)": 100 * a["test_error"], "here (%)": 100 * b["test_error"],
                     "moved (pts)": 100 * (b["test_error"] - a["test_error"]),
                     "torch": f"{a['torch_version']} -> {b['torch_version']}",
                     "cpu here": b.get("cpu_model")})
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False, floatfmt=".2f"))
    moved = table["moved (pts)"].abs()
    print(f"\n{len(table)} cells: mean |moved| {moved.mean():.2f} pts, max {moved.max():.2f} pts")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
