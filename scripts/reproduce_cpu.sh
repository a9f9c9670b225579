#!/usr/bin/env bash
# The REDUCED reproduction on a CPU (REPRODUCTION.md): the fig2_lite_cpu sweep on real
# Fashion-MNIST, a second seed for each panel's best cell, then the report.
# Usage: scripts/reproduce_cpu.sh [extra overrides, e.g. dataset.root=DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -m harness run -m +experiment=fig2_lite_cpu "$@"
"$PY" - <<'PYEOF' > /tmp/harness-best-cells.txt
from harness.analysis.frames import best_cells, cells, load_runs

runs, _ = load_runs("results/fig2_lite_cpu")
for _, row in best_cells(cells(runs[runs["seed"] == 0])).iterrows():
    print(f"panel={row.optimizer}_{row.decay} optimizer.lr={row.lr!r} "
          f"decay.weight_decay={row.lam!r}")
PYEOF
while read -r -a cell; do
  "$PY" -m harness run +experiment=fig2_lite_cpu "${cell[@]}" seed=1 "$@"
done < /tmp/harness-best-cells.txt
"$PY" -m harness report fig2_lite_cpu
