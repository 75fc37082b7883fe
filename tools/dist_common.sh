# Shared by dist_train.sh and dist_test.sh (sourced, not run): checks GPUS and
# sets NNODES, NODE_RANK, MASTER_ADDR, PORT and PYTHONPATH for torchrun.
# A PORT given by the user must be free on node 0 (torchrun's rendezvous
# store listens there); a taken one is one error line, exit status 2.
PYTHON=${PYTHON:-python3}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
if ! [[ "$GPUS" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: GPUS must be a positive number of processes per node, got '$GPUS'" >&2
  exit 2
fi
if [ -z "${PORT:-}" ]; then
  if [ "$NNODES" -gt 1 ]; then
    echo "error: set PORT to the same free port on all $NNODES nodes" >&2
    exit 2
  fi
  # A port that is free now, instead of a fixed default that collides when
  # two jobs share a machine.
  PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
elif [ "$NODE_RANK" = 0 ] && ! "$PYTHON" -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$PORT" 2>/dev/null; then
  echo "error: port $PORT on $MASTER_ADDR is in use; set PORT to a free port, or leave it unset to pick one" >&2
  exit 2
fi
export PYTHONPATH="$(cd "$TOOLS/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
echo "[dist] nodes=$NNODES node_rank=$NODE_RANK procs_per_node=$GPUS master=$MASTER_ADDR:$PORT" >&2
