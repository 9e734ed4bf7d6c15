#!/usr/bin/env bash
# From a fresh clone to the whole test suite passing.
set -euo pipefail
cd "$(dirname "$0")/.."
# Cache bytecode inside .venv even where the environment turns caching off
# (PYTHONDONTWRITEBYTECODE): without it every Python process compiles torch, xarray and dask
# again, ~7 s each here. The prefix keeps __pycache__ folders out of the checkout.
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX="$PWD/.venv/pycache"
bash scripts/setup.sh
. .venv/bin/activate
export MPLBACKEND=Agg
python -m pytest "$@"
