#!/usr/bin/env bash
# From a fresh clone to the demo running on the embedded simulated archive.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh ""  # the library alone: the demo needs no test extras
. .venv/bin/activate
export MPLBACKEND=Agg
harmonize demo "${1:-demo-out}"
