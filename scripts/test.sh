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
# Two worker processes (pytest-xdist), one per core of the 2-core box the suite is sized for:
# most tests are single-threaded Python, so one process leaves a core idle. --dist loadfile keeps
# each file's tests in one worker, so a module's fixtures (worlds, ingested cubes) are built once.
# HARMONIZE_TEST_WORKERS=0 runs everything in this process (as a plain `python -m pytest` does).
python -m pytest -n "${HARMONIZE_TEST_WORKERS:-2}" --dist loadfile "$@"
