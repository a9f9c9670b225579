#!/usr/bin/env bash
# The one command to run when a GPU is lent: at most 5 minutes, stage limits included.
#
#   scripts/gpu-check.sh --prepare [--shared DIR]    # here: fill .carry/, print the device call
#   scripts/gpu-check.sh [--out DIR] [--dry-run] [--budget S] [--wheels DIR] [--data DIR]
#
# --prepare copies what the device lacks from DIR (default ../shared) into .carry/ (added to
# .git/info/exclude if missing): the wheels of device-wheels/ into .carry/wheels/, the
# Fashion-MNIST files of datasets/fashion-mnist/ into .carry/fashion-mnist/; then it prints
# the device call (command, carry list, timeout).
#
# Otherwise, on the device, stages run under one deadline (--budget, 290 s; each stage also
# has its own limit, cut to what is left):
#   install  pip install --no-index --no-deps --target $GPU_CHECK_SITE (/tmp/site) of the
#            carried wheels, then every import the stages need: one failing ends the run
#   tests    pytest -m gpu (bf16 packs vs fp32 packs, channels_last end to end, no sync,
#            the compiled step equals the eager one through a cell diverging)
#   audit    a packed train step under torch.cuda.set_sync_debug_mode("error")
#   bench    python -m harness bench (ResNet-20 at K = 16); its JSON is
#            rewritten after every row; then its
#            summary (targets met or not, GPU-hours of the fig2 studies) goes into summary.txt
#   study    a short real Fashion-MNIST study on the GPU, two of its cells again on the CPU,
#            compared (benchmarks/gpu_check.py compare)
# DIR ($OUT when --out is not given) then holds 4 files, none more than one folder down:
# summary.txt (the device, each stage's rc and seconds), stages.log (every stage's output),
# bench/<device>.json, gpu-check.tar.gz (summary, log and the study's files), each rewritten
# after every stage. --dry-run runs every stage tiny on a CPU (tests/test_gpu.py).
# Exit status: 0 if every stage passed, 1 if one failed or ran out of time, 2 on bad usage.
set -uo pipefail
cd "$(dirname "$0")/.."
usage="valid: --prepare [--shared DIR] | [--out DIR] [--dry-run] [--budget S] [--wheels DIR] [--data DIR]"
OUT=${OUT:-} DRY=0 PREPARE=0 SHARED=../shared BUDGET="" WHEELS=.carry/wheels DATA=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prepare) PREPARE=1; shift ;;
    --shared) SHARED="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --wheels) WHEELS="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    *) echo "gpu-check: unknown option $1; $usage" >&2; exit 2 ;;
  esac
done
CALL_TIMEOUT=330  # the device call's timeout_s: the 290 s budget, start-up and packing

prepare() {
  local wheels=("$SHARED"/device-wheels/*.whl) data="$SHARED/datasets/fashion-mnist"
  [ -e "${wheels[0]}" ] || { echo "gpu-check: no wheels in $SHARED/device-wheels; pass --shared DIR" >&2; return 1; }
  [ -e "$data/train-images-idx3-ubyte.gz" ] || { echo "gpu-check: no Fashion-MNIST in $data; pass --shared DIR" >&2; return 1; }
  local exclude; exclude=$(git rev-parse --git-path info/exclude) || return 1
  mkdir -p "$(dirname "$exclude")"
  grep -qxF /.carry/ "$exclude" 2>/dev/null || echo /.carry/ >> "$exclude"
  rm -rf .carry/wheels .carry/fashion-mnist
  mkdir -p .carry/wheels .carry/fashion-mnist
  cp "${wheels[@]}" .carry/wheels/ && cp "$data"/*-ubyte.gz .carry/fashion-mnist/ || return 1
  chmod -R u+w .carry
  git check-ignore -q .carry/wheels || { echo "gpu-check: .carry/ is not ignored by git" >&2; return 1; }
  echo "prepared .carry/: $(ls .carry/wheels | wc -l) wheels, $(ls .carry/fashion-mnist | wc -l) Fashion-MNIST files, $(du -sh .carry | cut -f1)"
  echo "device call: run(command='bash scripts/gpu-check.sh --out \"\$OUT\"', carry=['.carry'], timeout_s=$CALL_TIMEOUT)"
}
if [ $PREPARE -eq 1 ]; then prepare; exit $?; fi

[ -n "$OUT" ] || { echo "gpu-check: --out DIR is required (or \$OUT); $usage" >&2; exit 2; }
[ -n "$BUDGET" ] || BUDGET=$([ $DRY -eq 1 ] && echo 600 || echo 290)
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/gpu-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT  # its files travel in the tarball
PY=${PY:-python3} SITE=${GPU_CHECK_SITE:-/tmp/site}
export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled \
  WANDB_SILENT=true PYTHONUNBUFFERED=1
for d in "$DATA" .carry/fashion-mnist ../shared/datasets/fashion-mnist /usr/share/datasets/fashion-mnist; do
  if [ -n "$d" ] && [ -e "$d/train-images-idx3-ubyte.gz" ]; then DATA=$(cd "$d" && pwd); break; fi
done
DEADLINE=$((SECONDS + BUDGET)) failed=0
: > "$OUT/stages.log"
{ echo "gpu-check $(git rev-parse --short HEAD 2>/dev/null || echo no-git) budget ${BUDGET}s dry_run=$DRY data=${DATA:-none}"
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
    torch.cuda.get_device_name() if torch.cuda.is_available() else "-")' 2>&1 | tail -1
  echo "cpus $(nproc)"; } > "$WORK/summary.txt"

pack() {  # summary and tarball built outside DIR, then moved in: a reader never sees half of one
  cp "$OUT/stages.log" "$WORK/stages.log"
  cp "$WORK/summary.txt" "$OUT/.summary.tmp" && mv "$OUT/.summary.tmp" "$OUT/summary.txt"
  local tmp; tmp=$(mktemp /tmp/gpu-check.XXXXXX.tar.gz)
  tar -czf "$tmp" -C "$WORK" . && mv "$tmp" "$OUT/gpu-check.tar.gz"
}

stage() {  # stage NAME SECONDS COMMAND...: run under min(SECONDS, what the budget has left)
  local name=$1 limit=$2; shift 2
  local left=$((DEADLINE - SECONDS)) tic=$SECONDS rc
  [ "$limit" -le "$left" ] || limit=$left
  if [ "$limit" -lt 5 ]; then
    echo "$name skipped: budget spent" >> "$WORK/summary.txt"; failed=1; pack; return 0
  fi
  echo "== $name (limit ${limit}s)" | tee -a "$OUT/stages.log"
  timeout -k 5 "$limit" bash -c '"$@"' _ "$@" >> "$OUT/stages.log" 2>&1
  rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - tic))$([ $rc -eq 124 ] && echo ' (timed out)')" >> "$WORK/summary.txt"
  if [ $rc -ne 0 ]; then failed=1; echo "gpu-check: $name FAILED (rc $rc), see stages.log"; fi
  pack
  return $rc
}

install() {  # the carried wheels, then every import a later stage needs
  shopt -s nullglob
  local wheels=("$WHEELS"/*.whl)
  if [ ${#wheels[@]} -gt 0 ]; then
    "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "${wheels[@]}" || return 1
  else
    echo "no wheels in $WHEELS"
  fi
  "$PY" -c 'import hydra, omegaconf, torch, torchvision, numpy, pandas, pyarrow, PIL, yaml, pytest
import harness.cli.run, harness.train.loop
print("imports ok: hydra", hydra.__version__, "from", hydra.__file__)'
}

study() {  # a panel of 2 x 2 cells on the device, then 2 of them on the CPU
  local device=cuda epochs=2 subset=(dataset.train_subset=10000 dataset.test_subset=2000)
  [ -n "$DATA" ] || { echo "no Fashion-MNIST found; run --prepare here or pass --data DIR"; return 1; }
  if [ $DRY -eq 1 ]; then
    device=cpu epochs=1 subset=(dataset.train_subset=512 dataset.test_subset=256)
  fi
  local base=(dataset=fashion_mnist "dataset.root=$DATA" dataset.download=false model=small
              optimizer=adam decay=decoupled "train.epochs=$epochs" train.batch_size=128
              logger=none logger.progress=none study=gpucheck "${subset[@]}")
  "$PY" -m harness run "${base[@]}" "optimizer.lr=[0.001,0.004]" \
    "decay.weight_decay=[0.0001,0.001]" "train.device=$device" train.pack=auto \
    "run.results_dir=$WORK/study/gpu" || return 1
  "$PY" benchmarks/gpu_check.py cells "$WORK/study/gpu" gpucheck 2 > "$WORK/study/cells.txt" || return 1
  while read -r -a cell; do
    "$PY" -m harness run "${base[@]}" "${cell[@]}" train.device=cpu train.pack=1 \
      "run.results_dir=$WORK/study/cpu" || return 1
  done < "$WORK/study/cells.txt"
  "$PY" benchmarks/gpu_check.py compare "$WORK/study/gpu/gpucheck/runs" "$WORK/study/cpu/gpucheck/runs"
}

bench_summary() {  # the bench's targets and GPU-hours, from its JSON (a cut-short one too)
  local left=$((DEADLINE - SECONDS)) reports=("$OUT"/bench/*.json)
  [ -e "${reports[0]}" ] && [ $left -ge 5 ] || return 0
  [ $left -le 20 ] || left=20
  timeout -k 2 "$left" "$PY" benchmarks/gpu_check.py summary "${reports[@]}" \
    >> "$WORK/summary.txt" 2>> "$OUT/stages.log" \
    || echo "bench summary failed (stages.log)" >> "$WORK/summary.txt"
  pack
}

export DRY WHEELS DATA PY SITE WORK
export -f install study
if ! stage install $([ $DRY -eq 1 ] && echo 30 || echo 20) install; then
  echo "gpu-check: stopped: the install stage failed (stages.log)" | tee -a "$WORK/summary.txt"
  pack; exit 1
fi
if [ $DRY -eq 1 ]; then
  stage tests 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py tests/train/test_memory.py tests/train/test_compiled.py
  stage audit 60 "$PY" benchmarks/gpu_check.py audit --device cpu --model small
  stage bench 120 "$PY" -m harness bench --dry-run --device cpu --out "$OUT/bench"
  bench_summary
  stage study 300 study
else  # 20 + 90 + 25 + 95 + 60 = 290 s of limits, sized on the H200 runs of 2026-12-04 (torch
  # 2.11: install 12 s, tests 79 s, audit 18 s, study over 50 s). Shake-Shake's K = 16 rows
  # alone take over 100 s (84 s of it compiling the pack), so the bench here is ResNet-20's;
  # Shake-Shake's is a call of its own (results/bench/nvidia-h200.md)
  stage tests 90 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py tests/train/test_memory.py tests/train/test_compiled.py
  stage audit 25 "$PY" benchmarks/gpu_check.py audit --device cuda
  stage bench 95 "$PY" -m harness bench --out "$OUT/bench" --steps 20 --warmup 5 --packs 16 \
    --models resnet20
  bench_summary
  stage study 60 study
fi
echo "gpu-check: $([ $failed -eq 0 ] && echo passed || echo FAILED) in $SECONDS s" >> "$WORK/summary.txt"
pack
cat "$OUT/summary.txt"
exit $failed
