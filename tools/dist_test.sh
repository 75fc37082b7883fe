#!/usr/bin/env bash
# Distributed testing with torchrun:
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]
# Same environment knobs as tools/dist_train.sh (NNODES, NODE_RANK,
# MASTER_ADDR, PORT).
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 CONFIG CHECKPOINT GPUS [tools/test.py arguments]" >&2
  exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
TOOLS=$(cd "$(dirname "$0")" && pwd)
source "$TOOLS/dist_common.sh"
# The one line printed above torchrun's report when a rank fails.
HINT="run it again with: bash tools/dist_test.sh $(printf '%q ' "$CONFIG" "$CHECKPOINT" "$GPUS" "$@")"
exec "$PYTHON" -m tools.cli.torchrun --retry-hint "${HINT% }" -- \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node="$GPUS" \
  --master_addr="$MASTER_ADDR" --master_port="$PORT" \
  "$TOOLS/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
