#!/usr/bin/env bash
# The quick start of README.md, end to end on the built-in mini datasets:
#   bash tools/quickstart.sh            # Twins: detection + segmentation
#   bash tools/quickstart.sh sasa       # SASA: RetinaNet + Semantic FPN
#   bash tools/quickstart.sh mask-rcnn  # Twins Mask R-CNN: boxes + masks
# 1. set up the environment if needed (tools/setup_env.sh);
# 2. write data/mini/ (mini COCO-style and ADE20K-style sets) if missing;
# 3. train the quickstart configs through tools/train.py: the
#    Twins-PCPVT-S RetinaNet and Semantic FPN (default), the all-attention
#    SASA RetinaNet and the SASA-ResNet Semantic FPN (`sasa`), or the
#    Twins-PCPVT-S Mask R-CNN (`mask-rcnn`);
# 4. evaluate them through tools/test.py;
# 5. draw, per run, the loss and mAP/mIoU curves
#    (tools/analysis/analyze_logs.py) and a gallery of validation images,
#    ground truth beside prediction, with instance masks for Mask R-CNN
#    (tools/analysis/gallery.py);
# 6. gather report.md (tables and pictures) and report.json
#    (detection.bbox_mAP, detection.segm_mAP for Mask R-CNN and
#    segmentation.mIoU, as fractions) in the output folder, and print each
#    score beside its target.
# Environment: PYTHON (default python3), QUICKSTART_DIR (default
# work_dirs/quickstart, work_dirs/quickstart_sasa for `sasa`,
# work_dirs/quickstart_mask_rcnn for `mask-rcnn`). Extra arguments go to
# every tools/train.py run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MODE=twins
case "${1:-}" in
  sasa | mask-rcnn)
    MODE=$1
    shift
    ;;
  '' | -*) ;;
  *)
    echo "error: unknown quickstart mode '$1': give sasa, mask-rcnn or" \
      "none (Twins); options after it go to tools/train.py" >&2
    exit 2
    ;;
esac
case "$MODE" in
  sasa) OUT=${QUICKSTART_DIR:-work_dirs/quickstart_sasa} ;;
  mask-rcnn) OUT=${QUICKSTART_DIR:-work_dirs/quickstart_mask_rcnn} ;;
  *) OUT=${QUICKSTART_DIR:-work_dirs/quickstart} ;;
esac
DATA=data/mini
DET_CFG=configs/quickstart/retinanet_twins_pcpvt_s_mini_coco.py
SEG_CFG=configs/quickstart/fpn_twins_pcpvt_s_mini_ade.py
SASA_CFG=configs/quickstart/retinanet_sasa_r26_attnstem_attnhead_mini_coco.py
SASA_SEG_CFG=configs/quickstart/fpn_sasa_r26_convstem_mini_ade.py
MASK_CFG=configs/quickstart/mask_rcnn_twins_pcpvt_s_mini_coco.py
# Idle OpenMP threads sleep instead of spinning: on a busy machine spinning
# threads slow training several times over (measured: 17.6 s vs 3.9 s per
# iteration with two other jobs running); on an idle one it costs nothing.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
start=$(date +%s)
stamp() { echo "[quickstart] $(( $(date +%s) - start ))s: $*"; }

bash tools/setup_env.sh
if [ ! -f "$DATA/coco/annotations/instances_val2017.json" ] ||
   [ ! -d "$DATA/ade/ADEChallengeData2016/annotations/validation" ]; then
  stamp "writing the mini datasets to $DATA"
  "$PY" tools/dataset_converters/make_mini_datasets.py "$DATA"
fi

FIGURES=()
run_task() {  # name config [train args]
  local name=$1 cfg=$2
  stamp "training $name ($cfg)"
  "$PY" tools/train.py "$cfg" --work-dir "$OUT/$name" "${@:3}"
  local ckpt
  ckpt=$(cat "$OUT/$name/last_checkpoint")
  stamp "testing $name ($ckpt)"
  "$PY" tools/test.py "$cfg" "$ckpt" --work-dir "$OUT/$name/test"
  stamp "drawing $name curves and gallery"
  "$PY" tools/analysis/analyze_logs.py plot_curve "$OUT/$name" \
    --legend "$name" --out "$OUT/${name}_curves.png"
  "$PY" tools/analysis/gallery.py "$cfg" "$ckpt" \
    --out "$OUT/${name}_gallery.png"
  FIGURES+=("$OUT/${name}_curves.png" "$OUT/${name}_gallery.png")
}
if [ "$MODE" = sasa ]; then
  run_task detection "$SASA_CFG" "$@"
  run_task segmentation "$SASA_SEG_CFG" "$@"
  TEST_DIRS=("$OUT/detection/test" "$OUT/segmentation/test")
elif [ "$MODE" = mask-rcnn ]; then
  run_task detection "$MASK_CFG" "$@"
  TEST_DIRS=("$OUT/detection/test")
else
  run_task detection "$DET_CFG" "$@"
  run_task segmentation "$SEG_CFG" "$@"
  TEST_DIRS=("$OUT/detection/test" "$OUT/segmentation/test")
fi

"$PY" tools/analysis/report.py "${TEST_DIRS[@]}" --out "$OUT/report.md" \
  --json "$OUT/report.json" --figures "${FIGURES[@]}"
elapsed=$(( $(date +%s) - start ))
"$PY" - "$OUT/report.json" "$elapsed" <<'PYEOF'
import json
import sys

path, elapsed = sys.argv[1], int(sys.argv[2])
with open(path) as f:
    report = json.load(f)
report['wall_time_s'] = elapsed
targets = {'detection.bbox_mAP': 0.3, 'detection.segm_mAP': 0.3,
           'segmentation.mIoU': 0.5}
values = {}
for key in targets:
    task, metric = key.split('.')
    if metric in report.get(task, {}):
        values[key] = report[task][metric]
report['targets'] = {k: v for k, v in targets.items() if k in values}
report['targets_met'] = all(values[k] >= targets[k] for k in values)
with open(path, 'w') as f:
    json.dump(report, f, indent=2)
    f.write('\n')
shown = ', '.join(f'{k.split(".")[1]} {v:.3f} (target {targets[k]})'
                  for k, v in values.items())
print(f'[quickstart] {shown}, {elapsed // 60} min {elapsed % 60} s in total')
PYEOF
stamp "done: $OUT/report.md, $OUT/report.json"
