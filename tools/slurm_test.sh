#!/usr/bin/env bash
# Testing on a Slurm cluster:
#   [GPUS=8] bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args]
# Environment knobs: GPUS (total, default 8), GPUS_PER_NODE (default 8),
# CPUS_PER_TASK (default 5), SRUN_ARGS (extra srun options); see
# tools/slurm_common.sh.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 PARTITION JOB_NAME CONFIG CHECKPOINT [tools/test.py arguments]" >&2
  exit 2
fi
PARTITION=$1
JOB_NAME=$2
TOOLS=$(cd "$(dirname "$0")" && pwd)
TOOL="$TOOLS/test.py"
ARGS=("$3" "$4")
shift 4
source "$TOOLS/slurm_common.sh"
