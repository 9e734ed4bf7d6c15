#!/usr/bin/env bash
# Create .venv (if needed) and install harmonize.
#
#   bash scripts/setup.sh [EXTRAS]     EXTRAS: comma-separated extras, default "test,bench";
#                                      "" installs only what the library and the demo need
#
# torch is installed first, pinned to the CPU build that ships on this machine's disk: a plain
# `torch` requirement would otherwise pull a multi-GB CUDA build. GPU users install their own
# torch first; pyproject only asks for torch>=2.4. The rest goes through uv when it can be
# installed (measured here: the dependencies in 11 s with uv against ~6 min with pip on a busy
# 2-core box), else through pip.
set -euo pipefail
cd "$(dirname "$0")/.."
# Cache bytecode inside .venv even where the environment turns caching off
# (PYTHONDONTWRITEBYTECODE): without it every Python process compiles torch, xarray and dask
# again, ~7 s each here. The prefix keeps __pycache__ folders out of the checkout.
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX="$PWD/.venv/pycache"
EXTRAS=${1-test,bench}
PY=${PYTHON:-python3}
BASE_PY=$(command -v "$PY")  # the interpreter itself, not the venv's once it is activated
quiet() { grep -v -e "^WARNING: Location" -e "is ignored: it is neither" || true; }
if [ ! -x .venv/bin/python ]; then
  # Without pip: seeding pip (ensurepip) is ~7 CPU s here; uv installs it below in well under 1 s.
  "$PY" -m venv --without-pip .venv
fi
. .venv/bin/activate
ensure_pip() {
  python -m pip --version >/dev/null 2>&1 || python -m ensurepip --upgrade >/dev/null
}
install_uv() {
  # The interpreter's own pip installs uv into the new venv (pip >= 22.3 has --python), else
  # the venv gets pip first.
  "$BASE_PY" -m pip --python "$(command -v python)" install --quiet uv 2>&1 | quiet
  python -c "import uv" 2>/dev/null || { ensure_pip && python -m pip install --quiet uv 2>&1 | quiet; }
}
have_uv() {
  [ "${HARMONIZE_NO_UV:-}" = "" ] && { python -c "import uv" 2>/dev/null || install_uv; } \
    && python -c "import uv" 2>/dev/null
}
torch_spec="torch==${HARMONIZE_TORCH_VERSION:-2.13.0}"
if ! python -c "import torch" 2>/dev/null; then
  # uv unpacks the torch wheel ~3x faster than pip (6 s against 16 s here). It does not read
  # pip's configuration, so pip's find-links (where the local CPU build lies) is passed on.
  # pip's fallback: --no-compile, byte-compiling torch's thousands of modules is most of its time.
  links=$("$BASE_PY" -m pip config get global.find-links 2>/dev/null || true)
  if ! { have_uv && python -m uv pip install --quiet --python "$(command -v python)" \
          ${links:+--find-links "$links"} "$torch_spec"; }; then
    ensure_pip && python -m pip install --quiet --no-compile "$torch_spec" 2>&1 | quiet
  fi
fi
target="."
[ -n "$EXTRAS" ] && target=".[${EXTRAS}]"
if have_uv \
    && python -m uv pip install --quiet --python "$(command -v python)" -e "$target" pip; then
  :  # pip too, so that `pip install ...` in the activated venv installs into it, as users expect
else
  ensure_pip && python -m pip install --quiet -e "$target" 2>&1 | quiet
fi
# Headless Chromium for the interactive map's browser test (tests/test_webmap.py), where it can
# be installed: as root with apt (CI's clean machine); elsewhere the test says why it skips.
if [ -n "$EXTRAS" ] && ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "chromium could not be installed: the browser test will skip"
fi
python -c "import harmonize, torch; print(f'harmonize {harmonize.__version__} ready (torch {torch.__version__})')"
