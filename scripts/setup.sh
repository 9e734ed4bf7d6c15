#!/usr/bin/env bash
# Create .venv (if needed) and install harmonize with its test extras.
# torch is installed first, pinned to the CPU build that ships on this machine's disk: a plain
# `torch` requirement would otherwise pull a multi-GB CUDA build. GPU users install their own
# torch first; pyproject only asks for torch>=2.4.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install --quiet "torch==${HARMONIZE_TORCH_VERSION:-2.13.0}" 2>&1 | grep -v "^WARNING: Location" || true
fi
python -m pip install --quiet -e ".[test,bench]" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import harmonize, torch; print(f'harmonize {harmonize.__version__} ready (torch {torch.__version__})')"
