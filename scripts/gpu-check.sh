#!/usr/bin/env bash
# The one command to run when a GPU is at hand (budget: 8 minutes on one H200).
#
#   scripts/gpu-check.sh --out DIR [--dry-run] [--wheels DIR] [--data DIR]
#
# Stages, each under its own timeout, DIR/gpu-check.tar.gz rewritten after every stage:
#   install  wheels a bare GPU machine lacks, from an ignored folder carried beside the
#            checkout (default .whl/): pip install --no-index --no-deps --target /tmp/site
#   tests    pytest -m gpu (bf16 packs vs fp32 packs, channels_last end to end, no sync)
#   audit    a packed train step under torch.cuda.set_sync_debug_mode("error")
#   bench    python -m harness bench (naive, strong, harness solo, packs 1..64 +- compile)
#   study    a short real Fashion-MNIST study (one panel, packed, a few epochs) on the GPU,
#            then two of its cells again on the CPU; their parquet files must agree to bf16
#            tolerance (benchmarks/gpu_check.py compare)
# --dry-run runs every stage tiny on a CPU (CI runs it: tests/test_gpu.py). W&B is disabled.
# Exit status: 0 if every stage passed, else 1 (the log of each stage is in the tarball).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="" DRY=0 WHEELS=.whl DATA=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --wheels) WHEELS="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    *) echo "gpu-check: unknown option $1; valid: --out DIR [--dry-run] [--wheels DIR] [--data DIR]" >&2
       exit 2 ;;
  esac
done
[ -n "$OUT" ] || { echo "gpu-check: --out DIR is required" >&2; exit 2; }
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
PY=${PY:-python3}
export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled \
  WANDB_SILENT=true PYTHONUNBUFFERED=1
for d in "$DATA" ../shared/datasets/fashion-mnist shared/datasets/fashion-mnist \
         /usr/share/datasets/fashion-mnist; do
  if [ -n "$d" ] && [ -e "$d/train-images-idx3-ubyte.gz" ]; then DATA=$(cd "$d" && pwd); break; fi
done
failed=0

pack() {  # the tarball is built outside DIR, then moved in: a reader never sees half of one
  local tmp; tmp=$(mktemp /tmp/gpu-check.XXXXXX.tar.gz)
  tar -czf "$tmp" -C "$OUT" --exclude gpu-check.tar.gz . && mv "$tmp" "$OUT/gpu-check.tar.gz"
}

stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local tic=$SECONDS
  echo "gpu-check: $name (limit ${limit}s)"
  timeout "$limit" bash -c '"$@"' _ "$@" > "$OUT/logs/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - tic))" >> "$OUT/logs/stages.txt"
  if [ $rc -ne 0 ]; then failed=1; echo "gpu-check: $name FAILED (rc $rc), see logs/$name.log"; fi
  pack
  return 0
}

install_wheels() {
  shopt -s nullglob
  local wheels=("$WHEELS"/*.whl)
  if [ ${#wheels[@]} -eq 0 ]; then echo "no wheels in $WHEELS: nothing to install"; return 0; fi
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/site "${wheels[@]}"
}

study() {  # a panel of 2 x 2 cells on the device, then 2 of them on the CPU
  local device=cuda epochs=2 subset=(dataset.train_subset=10000 dataset.test_subset=2000)
  [ -n "$DATA" ] || { echo "no Fashion-MNIST found; pass --data DIR"; return 1; }
  if [ $DRY -eq 1 ]; then
    device=cpu epochs=1 subset=(dataset.train_subset=512 dataset.test_subset=256)
  fi
  local base=(dataset=fashion_mnist "dataset.root=$DATA" dataset.download=false model=small
              optimizer=adam decay=decoupled "train.epochs=$epochs" train.batch_size=128
              logger=none logger.progress=line study=gpucheck "${subset[@]}")
  "$PY" -m harness run "${base[@]}" "optimizer.lr=[0.001,0.004]" \
    "decay.weight_decay=[0.0001,0.001]" "train.device=$device" train.pack=auto \
    "run.results_dir=$OUT/study/gpu" || return 1
  "$PY" benchmarks/gpu_check.py cells "$OUT/study/gpu" gpucheck 2 > "$OUT/study/cells.txt" || return 1
  while read -r -a cell; do
    "$PY" -m harness run "${base[@]}" "${cell[@]}" train.device=cpu train.pack=1 \
      "run.results_dir=$OUT/study/cpu" || return 1
  done < "$OUT/study/cells.txt"
  "$PY" benchmarks/gpu_check.py compare "$OUT/study/gpu/gpucheck/runs" "$OUT/study/cpu/gpucheck/runs"
}

export OUT DRY WHEELS DATA PY
export -f install_wheels study
{ "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
  torch.cuda.get_device_name() if torch.cuda.is_available() else "-")'; nproc; } \
  > "$OUT/logs/device.txt" 2>&1
if [ $DRY -eq 1 ]; then
  stage install 60 install_wheels
  stage tests 300 "$PY" -m pytest -q -m gpu tests/test_gpu.py tests/train/test_memory.py
  stage audit 120 "$PY" benchmarks/gpu_check.py audit --device cpu
  stage bench 300 "$PY" -m harness bench --dry-run --device cpu --out "$OUT/bench"
  stage study 600 study
else
  # about 7.5 minutes of limits in all; the bench writes its JSON after every model
  stage install 30 install_wheels
  stage tests 60 "$PY" -m pytest -q -m gpu tests/test_gpu.py tests/train/test_memory.py
  stage audit 30 "$PY" benchmarks/gpu_check.py audit --device cuda
  stage bench 200 "$PY" -m harness bench --out "$OUT/bench" --steps 20 --warmup 5
  stage study 120 study
fi
cat "$OUT/logs/stages.txt"
echo "gpu-check: wrote $OUT/gpu-check.tar.gz"
exit $failed
