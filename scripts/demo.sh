#!/usr/bin/env bash
# From a fresh clone to the demo running on the embedded simulated archive.
set -euo pipefail
cd "$(dirname "$0")/.."
# Cache bytecode inside .venv even where the environment turns caching off
# (PYTHONDONTWRITEBYTECODE): without it every Python process compiles torch, xarray and dask
# again, ~7 s each here. The prefix keeps __pycache__ folders out of the checkout.
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX="$PWD/.venv/pycache"
bash scripts/setup.sh ""  # the library alone: the demo needs no test extras
. .venv/bin/activate
export MPLBACKEND=Agg
harmonize demo "${1:-demo-out}"
