#!/usr/bin/env bash
# The CPU study in which the paper's claims 1 and 2 are testable (issue 12, REPRODUCTION.md):
#   claim2_cpu: ResNet-20, lambda = 0, AdamW and Adam+L2 at 3 lambdas, 3 seeds (21 runs)
#   claim1_cpu: `small`, SGD+L2 on 8 x 13 and SGDW on 7 x 14 (alpha x lambda_norm) grids, 10 epochs
#               of 5000 images, 1 seed (202 runs), and a second seed on two alpha columns of
#               each panel (54 runs) that measures the noise
# Both train on 5000 images and hold out 1000 more (dataset.val_split) to choose cells on.
# Each study is trained by two single-thread workers (`run.worker=0,1`, one per core) that
# share its grid through claim files; rerunning the script resumes (finished cells are
# skipped, an interrupted cell resumes from its checkpoint). Then the reports are written.
# Measured (OMP_NUM_THREADS=1, two workers, other jobs now and then on the same cores): on a
# 2-core AMD EPYC claim2_cpu took 61 min wall (about 5 min per ResNet-20 run, 300 training
# images/s) and claim1_cpu 91 min for its first 108 runs (about 90 s per `small` run per worker)
# plus 66 min for the 94 cells its extended grids added (about 155 s per run, 550 training
# images/s against 1000 for the first 108; recorded in parquet, cause not measured), about
# 2.6 h in all. A first estimate on an Intel Xeon was 78 s
# per `small` run and 301 s per ResNet-20 run.
# Usage: [RESULTS=results] scripts/cpu_study.sh [pilot] [extra overrides, e.g. dataset.root=DIR]
#   pilot: only the four-claim study's pilot (issue 26, experiments/pilot_cpu.yaml, 14 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p outputs
PY=${PY:-.venv/bin/python}
RESULTS=${RESULTS:-results}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
train() {  # train STUDY LOG_TAG [overrides]: two single-thread workers share the study's grid
  local study=$1 tag=$2; shift 2
  local pids=() status=0
  for worker in 0 1; do
    "$PY" -m harness run -m +experiment="$study" run.worker="$worker" run.results_dir="$RESULTS" \
      logger.progress=line "$@" \
      > "outputs/$study$tag-worker$worker.log" 2>&1 &
    pids+=("$!")
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  tail -n 1 "outputs/$study$tag-worker0.log" "outputs/$study$tag-worker1.log"
  [ "$status" = 0 ] || { echo "cpu_study: a worker of $study failed (see outputs/)"; exit 1; }
}
if [ "${1:-}" = pilot ]; then  # the four-claim study's pilot (issue 26, REPRODUCTION.md)
  shift
  train pilot_cpu "" "$@"
  "$PY" -m harness report pilot_cpu --results-dir "$RESULTS"
  exit 0
fi
train claim2_cpu "" "$@"  # claim 2 first: the headline claim
"$PY" -m harness report claim2_cpu --results-dir "$RESULTS"
train claim1_cpu "" "$@"
# claim1_cpu's noise: a second seed on two alpha columns of each panel (2^-4 and 2^-1, all
# their lambdas; 54 runs), so the report can state the seed sd and size the frontier margin.
train claim1_cpu -seed1 seed=1 'grid.sgd_l2.lr=[0.0625,0.5]' 'grid.sgd_decoupled.lr=[0.0625,0.5]' "$@"
"$PY" -m harness report claim1_cpu --results-dir "$RESULTS"
