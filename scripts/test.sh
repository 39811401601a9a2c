#!/usr/bin/env bash
# Set up .venv (torch pinned first) and run the lint and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh tests,zoo,hub,mujoco,sweep,report
.venv/bin/python -m ruff check sb3_sparse tests benchmarks
.venv/bin/python -m pytest -q "$@"
