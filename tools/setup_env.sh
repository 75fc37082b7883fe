#!/usr/bin/env bash
# Install what pyproject.toml pins (the runtime dependencies and the `tests`
# and `docs` extras) and mmtwins itself (editable) into the current Python.
# pyproject.toml is the one place with versions; this script only reads it.
# Already-satisfied set-up returns in seconds; a fresh machine builds mmcv's ops
# once (about 8 minutes on 2 cores) and pip caches the wheel for later runs.
# GPU users: install your CUDA build of torch (>= 2.0) first; it is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Prints the requirements that are not satisfied, one per line, as pip
# specifiers ("mmtwins" for the package itself). Runs from / so that the
# clone itself does not count as installed.
missing=$(cd / && MMTWINS_ROOT="$OLDPWD" "$PY" - <<'PYEOF'
import importlib.metadata as md
import importlib.util
import os

try:
    import tomllib
except ImportError:  # Python < 3.11
    from pip._vendor import tomli as tomllib
try:
    from packaging.requirements import Requirement
except ImportError:  # not installed yet
    from pip._vendor.packaging.requirements import Requirement

root = os.environ['MMTWINS_ROOT']
with open(os.path.join(root, 'pyproject.toml'), 'rb') as f:
    project = tomllib.load(f)
extras = project['project']['optional-dependencies']
specs = (project['project']['dependencies'] + extras['tests']
         + extras['docs'])
torch_pin = project['tool']['mmtwins']['setup']['torch']
out = []
for spec in specs:
    req = Requirement(spec)
    try:
        found = md.version(req.name)
    except md.PackageNotFoundError:
        found = None
    if found is None or not req.specifier.contains(found, prereleases=True):
        out.append(torch_pin if req.name == 'torch' and found is None
                   else spec)
    elif req.name == 'mmcv':
        # mmcv without compiled ops imports, but RoIAlign, NMS and friends
        # fail.
        spec_ = importlib.util.find_spec('mmcv')
        folder = os.path.dirname(spec_.origin) if spec_ else ''
        if not any(f.startswith('_ext') for f in os.listdir(folder or '.')):
            out.append(spec)
spec_ = importlib.util.find_spec('mmtwins')
here = os.path.realpath(os.path.join(root, 'mmtwins'))
if spec_ is None or os.path.realpath(os.path.dirname(spec_.origin)) != here:
    out.append('mmtwins')
print('\n'.join(out))
PYEOF
)

if [ -z "$missing" ]; then
  echo "[setup] environment ready"
  exit 0
fi
echo "[setup] installing: $(echo "$missing" | tr '\n' ' ')"
pip_install() { "$PY" -m pip install --disable-pip-version-check "$@"; }

mapfile -t specs < <(echo "$missing" | grep -v -e '^mmtwins$' -e '^mmcv' || true)
mmcv=$(echo "$missing" | grep '^mmcv' || true)
# mmcv's setup.py needs pkg_resources, which setuptools >= 81 no longer ships.
pip_install "setuptools>=77,<81" wheel
torch=$(printf '%s\n' "${specs[@]}" | grep '^torch' || true)
if [ -n "$torch" ]; then
  pip_install "$torch"
fi
if [ -n "$mmcv" ]; then
  echo "[setup] building $mmcv with ops (first time only, ~8 min on 2 cores)"
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    pip_install --no-build-isolation "$mmcv"
fi
if [ ${#specs[@]} -gt 0 ]; then
  pip_install "${specs[@]}"
fi
pip_install --no-deps --no-build-isolation -e .
echo "[setup] environment ready"
