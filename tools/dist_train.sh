#!/usr/bin/env bash
# Distributed training with torchrun: bash tools/dist_train.sh CONFIG GPUS [train.py args]
#
# GPUS processes per node (one per GPU; on a machine without CUDA they run on
# the CPU and talk over gloo). Multi-node: run it on every node with the same
# NNODES, MASTER_ADDR and PORT and each node's NODE_RANK (0..NNODES-1).
#   NNODES       number of nodes (default 1)
#   NODE_RANK    rank of this node (default 0)
#   MASTER_ADDR  address of node 0 (default 127.0.0.1)
#   PORT         rendezvous port; single node: a free port is picked when unset,
#                several nodes: required (the same on every node)
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG GPUS [tools/train.py arguments]" >&2
  exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
TOOLS=$(cd "$(dirname "$0")" && pwd)
source "$TOOLS/dist_common.sh"
# The one line printed above torchrun's report when a rank fails.
HINT="resume with: bash tools/dist_train.sh $(printf '%q ' "$CONFIG" "$GPUS" "$@")"
case " $* " in *" --resume"*) ;; *) HINT="$HINT--resume" ;; esac
exec "$PYTHON" -m tools.cli.torchrun --retry-hint "${HINT% }" -- \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node="$GPUS" \
  --master_addr="$MASTER_ADDR" --master_port="$PORT" \
  "$TOOLS/train.py" "$CONFIG" --launcher pytorch "$@"
