#!/usr/bin/env bash
# Set up if needed, then run the whole test suite (slow tests included).
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
exec "${PYTHON:-python3}" -m pytest "$@"
