#!/usr/bin/env bash
# From a fresh clone to the whole test suite passing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export MPLBACKEND=Agg
python -m pytest "$@"
