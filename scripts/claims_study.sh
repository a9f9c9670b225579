#!/usr/bin/env bash
# The four-claim CPU study (issue 26; its rules: REPRODUCTION.md "Pre-registered: the four-claim
# study", committed before these runs). Stages, in the registered order:
#   pilot     experiments/pilot_cpu.yaml: SGD at alpha 2^-3, lambda = 0 / L2 / SGDW, 2 seeds
#   pilot24   the same at 24 epochs: the 12-epoch pilot fell short of its rule (REPRODUCTION.md)
#   claim1    claims_cpu: SGD+L2 and SGDW, three alpha columns of five lambda_norm each, seeds
#             0 and 1, each column centred on the pilot's optimum (C_L2, C_W below)
#   extend    claims_cpu: the registered edge extensions, one grid step beyond an edge argmin,
#             repeated until every lambda grid is bracketed or has been extended three times:
#             claim 1's columns (seeds 0 and 1; harness.analysis.registered.extensions), and
#             once claims23 has run, the decayed Adam panels' (seed 0; extensions23)
#   claims23  claims_cpu: Adam lambda = 0, AdamW and Adam+L2 over three alphas, seed 0; then
#             extend again
#   alpha     claims_cpu, amendment A2 (REPRODUCTION.md): Adam alpha columns beyond an edge
#             choice, seed 0, until bracketed or three steps (registered.alpha_extensions)
#   seeds     claims_cpu: the cells claims 2 and 3 chose on validation (as registered, and on
#             A2's wider grid once it is done), seeds 0-4
#   budgets   experiments/budgets_cpu.yaml: AdamW at 4, 12 and 36 epochs, 2 seeds (claim 4)
#   report    the reports of every stage's study
# Each stage is a list of sweeps; two single-thread workers (run.worker=0,1, one per core) each
# run every sweep of the stage in order and share the cells through claim files, so neither
# waits for the other between sweeps. Rerunning a stage resumes it: finished cells are skipped,
# an interrupted cell resumes from its checkpoint.
# Usage: [RESULTS=results] scripts/claims_study.sh STAGE [extra overrides, e.g. dataset.root=DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p outputs
PY=${PY:-.venv/bin/python}
RESULTS=${RESULTS:-results}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
STAGE=${1:?usage: scripts/claims_study.sh pilot|pilot24|claim1|extend|claims23|alpha|seeds|budgets|report}
shift
EXTRA=("$@")

# The pilot's optimum at alpha = 2^-3 (log2 lambda_norm; REPRODUCTION.md), which centres claim 1.
C_L2=${C_L2:-}
C_W=${C_W:-}

pow2() {  # pow2 LO HI: the list [2^LO, ..., 2^HI] as Hydra reads it
  "$PY" -c "import sys; lo, hi = map(int, sys.argv[1:]); print('[' + ','.join(repr(2.0 ** k) for k in range(lo, hi + 1)) + ']')" "$1" "$2"
}

columns() {  # columns PANEL C: one sweep per alpha column of claim 1's registered grid
  local panel=$1 c=$2 a s lo hi
  for a in -5 -3 -1; do
    s=$(( -(a + 3) ))
    lo=$(( c + (s < 0 ? s : 0) - 1 )); hi=$(( c + (s > 0 ? s : 0) + 1 ))
    if [ "$s" = 0 ]; then lo=$(( c - 2 )); hi=$(( c + 2 )); fi
    echo "panel=$panel grid.$panel.lr=$(pow2 "$a" "$a") grid.$panel.weight_decay=$(pow2 $lo $hi) seed=0,1"
  done
}

stage() {  # stage STUDY TAG: both workers run each sweep read from stdin (one line each: its
           # overrides, or "-" for the study's own sweep)
  local study=$1 tag=$2 sweeps pids=() status=0 worker
  sweeps=$(cat)
  for worker in 0 1; do
    (
      while read -r sweep; do
        [ -n "$sweep" ] || continue
        sweep=${sweep#-}  # "-": the study's own sweep, no overrides
        # shellcheck disable=SC2086 # a line is a list of overrides without spaces
        "$PY" -m harness run -m +experiment="$study" run.worker="$worker" \
          run.results_dir="$RESULTS" logger.progress=line $sweep "${EXTRA[@]}" || exit 1
      done <<< "$sweeps"
    ) > "outputs/$study$tag-worker$worker.log" 2>&1 &
    pids+=("$!")
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  tail -n 1 "outputs/$study$tag-worker0.log" "outputs/$study$tag-worker1.log"
  [ "$status" = 0 ] || { echo "claims_study: a worker of $study failed (see outputs/)"; exit 1; }
}

chosen() {  # one sweep per method of claims 2 and 3: its chosen cell at seeds 0-4
  "$PY" - "$RESULTS/claims_cpu" <<'PYTHON'
import sys
from harness.analysis import frames, registered
runs, _ = frames.load_runs(sys.argv[1])
if runs.empty:
    sys.exit(f"claims_study: no runs in {sys.argv[1]} yet; run the stages claim1 and claims23 first")
per_run = frames.finals(runs)
if registered.extensions(per_run) or registered.extensions23(per_run):
    sys.exit("claims_study: edge extensions are pending; run the stage extend first")
grids = [registered.grid23(per_run, a2=False)]  # as registered, then with A2's alphas
if not registered.alpha_extensions(per_run) and not grids[0].equals(per_run):
    grids.append(per_run)
lines = []
for grid in grids:
    grid = grid[~grid["failed"]]
    for optimizer, decay in registered.METHODS:
        picked = registered.choose(grid, optimizer, decay)
        if picked is None:
            sys.exit(f"claims_study: no {optimizer}/{decay} cells yet; run the stages before")
        lr, lam = picked
        panel = f"{optimizer}_{decay}"
        wd = f" grid.{panel}.weight_decay=[{lam!r}]" if decay != "none" else ""
        lines.append(f"panel={panel} grid.{panel}.lr=[{lr!r}]{wd} seed=0,1,2,3,4")
print("\n".join(dict.fromkeys(lines)))
PYTHON
}

widened() {  # A2: the Adam alpha columns beyond an edge choice still to run, at seed 0
  "$PY" - "$RESULTS/claims_cpu" <<'PYTHON'
import sys
from harness.analysis import frames, registered
runs, _ = frames.load_runs(sys.argv[1])
per_run = frames.finals(runs)
if registered.extensions23(per_run):
    sys.exit("claims_study: edge extensions are pending; run the stage extend first")
for decay, lr, lam in registered.alpha_extensions(per_run):
    panel = f"adam_{decay}"
    wd = f" grid.{panel}.weight_decay=[{lam!r}]" if decay != "none" else ""
    print(f"panel={panel} grid.{panel}.lr=[{lr!r}]{wd} seed=0")
PYTHON
}

extended() {  # one sweep per lambda grid still to extend: its next lambda, at the claim's seeds
  "$PY" - "$RESULTS/claims_cpu" <<'PYTHON'
import sys
from harness.analysis import frames, registered
runs, _ = frames.load_runs(sys.argv[1])
if runs.empty:
    sys.exit(f"claims_study: no runs in {sys.argv[1]} yet; run the stage claim1 first")
per_run = frames.finals(runs)
for optimizer, seeds, cells in (("sgd", "0,1", registered.extensions(per_run)),
                                ("adam", "0", registered.extensions23(per_run))):
    for decay, lr, lam in cells:
        panel = f"{optimizer}_{decay}"
        print(f"panel={panel} grid.{panel}.lr=[{lr!r}] grid.{panel}.weight_decay=[{lam!r}] "
              f"seed={seeds}")
PYTHON
}

case "$STAGE" in
  pilot) echo - | stage pilot_cpu "" ;;
  pilot24) echo train.epochs=24 | stage pilot_cpu -24 ;;  # the pilot fell short at 12 epochs
  claim1)
    [ -n "$C_L2" ] && [ -n "$C_W" ] || { echo "claims_study: set C_L2 and C_W"; exit 2; }
    { columns sgd_l2 "$C_L2"; columns sgd_decoupled "$C_W"; } | stage claims_cpu -claim1 ;;
  extend)
    while sweeps=$(extended) || exit 1; [ -n "$sweeps" ]; do
      echo "$sweeps" | stage claims_cpu -extend
    done ;;
  claims23) echo "panel=adam_none,adam_decoupled,adam_l2 seed=0" | stage claims_cpu -claims23 ;;
  alpha)  # amendment A2 (REPRODUCTION.md): loops until every edge alpha is bracketed or spent
    while sweeps=$(widened) || exit 1; [ -n "$sweeps" ]; do
      echo "$sweeps" | stage claims_cpu -alpha
    done ;;
  seeds) sweeps=$(chosen) && echo "$sweeps" | stage claims_cpu -seeds ;;
  budgets) echo - | stage budgets_cpu "" ;;
  report)
    for study in pilot_cpu claims_cpu budgets_cpu; do
      [ -d "$RESULTS/$study/runs" ] && "$PY" -m harness report "$study" --results-dir "$RESULTS"
    done ;;
  *) echo "claims_study: unknown stage $STAGE"; exit 2 ;;
esac
