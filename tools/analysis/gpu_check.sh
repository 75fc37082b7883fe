#!/usr/bin/env bash
# One short GPU check (about 5-8 minutes on one data-centre GPU), results in
# one file:
#   bash tools/analysis/gpu_check.sh [RESULTS_FILE]
# (default work_dirs/gpu_check/results.md). Steps:
#   1. the CUDA-marked tests (pytest -m gpu);
#   2. the Twins backbone benchmark on CUDA: fp32 and bf16, eager and
#      torch.compile, mmtwins against mmseg (forward at 512x512, training
#      step batch 2 at 512x512, also under bf16 autocast);
#   3. the SASA layer benchmark on CUDA;
#   4. a few AMP (fp16) training iterations of the detection quickstart
#      config on the mini COCO set (written if missing): one epoch, 50
#      iterations of 8 images at 128 px, no validation.
# Every step runs even when an earlier one fails; the exit status is that
# of the first failed step. Without CUDA it stops at once with one line.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
OUT=${1:-work_dirs/gpu_check/results.md}
mkdir -p "$(dirname "$OUT")"
if ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  echo "error: gpu_check.sh needs a CUDA GPU, and torch.cuda.is_available() is False here (torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo missing))" >&2
  exit 2
fi
status=0
start=$(date +%s)
{
  echo "# mmtwins GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  "$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"- GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__}, CUDA {torch.version.cuda}")'
  echo "- git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
} > "$OUT"

step() {  # title, command...
  local title=$1; shift
  local t0=$(date +%s)
  echo "[gpu_check] $title" >&2
  {
    echo; echo "## $title"; echo; echo '```'
    echo "\$ $*"
  } >> "$OUT"
  "$@" >> "$OUT" 2>&1
  local rc=$?
  {
    echo '```'
    echo "exit status $rc, $(( $(date +%s) - t0 )) s"
  } >> "$OUT"
  if [ $rc -ne 0 ] && [ $status -eq 0 ]; then status=$rc; fi
}

step "CUDA-marked tests" \
  "$PY" -m pytest -q -m gpu -p no:cacheprovider tests
step "Twins backbones on CUDA (fp32/bf16, eager/compiled, vs mmseg)" \
  "$PY" tools/analysis/benchmark_backbone.py --device cuda --compile \
  --sizes 512x512 800x1344 --repeats 10 --train-sizes 512x512 \
  --train-repeats 10 --warmup 3 --train-amp
step "SASA layer on CUDA" \
  "$PY" tools/analysis/benchmark_sasa.py --device cuda --repeats 10
if [ ! -f data/mini/coco/annotations/instances_train2017.json ]; then
  "$PY" tools/dataset_converters/make_mini_datasets.py data/mini >&2
fi
step "AMP training iterations (detection quickstart config)" \
  "$PY" tools/train.py configs/quickstart/retinanet_twins_pcpvt_s_mini_coco.py \
  --amp --work-dir work_dirs/gpu_check/amp_train \
  --cfg-options train_cfg.max_epochs=1 train_cfg.val_interval=2 \
  default_hooks.logger.interval=10 default_hooks.checkpoint.interval=1
echo >> "$OUT"
echo "Total: $(( $(date +%s) - start )) s; first failing status: $status" >> "$OUT"
echo "[gpu_check] results in $OUT" >&2
exit $status
