# Shared by slurm_train.sh and slurm_test.sh (sourced, not run): runs
#   srun ... python -u TOOL "${ARGS[@]}" --launcher slurm "$@"
# with the caller's PARTITION, JOB_NAME, TOOL and ARGS (an array).
# Environment knobs: GPUS (total, default 8), GPUS_PER_NODE (default
# min(GPUS, 8)), CPUS_PER_TASK (default 5), SRUN_ARGS (extra srun options),
# PYTHON (default python3).
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 8 ? GPUS : 8))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-}
export PYTHONPATH="$(cd "$TOOLS/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
# shellcheck disable=SC2086
exec srun -p "$PARTITION" \
  --job-name="$JOB_NAME" \
  --gres=gpu:"$GPUS_PER_NODE" \
  --ntasks="$GPUS" \
  --ntasks-per-node="$GPUS_PER_NODE" \
  --cpus-per-task="$CPUS_PER_TASK" \
  --kill-on-bad-exit=1 \
  $SRUN_ARGS \
  "${PYTHON:-python3}" -u "$TOOL" "${ARGS[@]}" --launcher slurm "$@"
