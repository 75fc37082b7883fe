#!/usr/bin/env bash
# Install the pinned OpenMMLab stack and mmtwins itself into the current Python.
# Already-satisfied set-up returns in seconds; a fresh machine builds mmcv's ops
# once (about 8 minutes on 2 cores) and pip caches the wheel for later runs.
# GPU users: install your CUDA build of torch (>= 2.0) first; it is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

here=$(pwd)
# Run the check from / so that the clone itself does not count as installed.
missing=$(cd / && MMTWINS_ROOT="$here" "$PY" - <<'PYEOF'
import importlib.metadata as md
import importlib.util
import os

want = {'mmengine': '0.10.7', 'mmcv': '2.1.0', 'mmdet': '3.3.0',
        'mmsegmentation': '1.2.2'}
out = []


def has(dist, ver=None):
    try:
        found = md.version(dist)
    except md.PackageNotFoundError:
        return False
    return ver is None or found == ver


if not has('torch'):
    out.append('torch')
for dist, ver in want.items():
    if not has(dist, ver):
        out.append(dist)
if 'mmcv' not in out:
    # mmcv without compiled ops imports, but RoIAlign, NMS and friends fail.
    spec = importlib.util.find_spec('mmcv')
    ext = [f for f in os.listdir(os.path.dirname(spec.origin))
           if f.startswith('_ext')] if spec else []
    if not ext:
        out.append('mmcv')
for dist in ('ftfy', 'regex', 'pytest', 'ruff', 'pycocotools'):
    if not has(dist):
        out.append(dist)
spec = importlib.util.find_spec('mmtwins')
here = os.path.realpath(os.path.join(os.environ['MMTWINS_ROOT'], 'mmtwins'))
if spec is None or os.path.realpath(os.path.dirname(spec.origin)) != here:
    out.append('mmtwins')
print(' '.join(out))
PYEOF
)

if [ -z "$missing" ]; then
  echo "[setup] environment ready"
  exit 0
fi
echo "[setup] installing: $missing"
pip_install() { "$PY" -m pip install --disable-pip-version-check "$@"; }

if [[ " $missing " == *" torch "* ]]; then
  pip_install torch==2.13.0
fi
# mmcv's setup.py needs pkg_resources, which setuptools >= 81 no longer ships.
pip_install "setuptools>=77,<81" wheel
if [[ " $missing " == *" mmengine "* ]]; then
  pip_install mmengine==0.10.7
fi
if [[ " $missing " == *" mmcv "* ]]; then
  echo "[setup] building mmcv 2.1.0 with ops (first time only, ~8 min on 2 cores)"
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    pip_install --no-build-isolation mmcv==2.1.0
fi
pip_install mmdet==3.3.0 mmsegmentation==1.2.2 ftfy regex pycocotools pytest ruff
pip_install --no-deps --no-build-isolation -e .
echo "[setup] environment ready"
