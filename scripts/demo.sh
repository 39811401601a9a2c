#!/usr/bin/env bash
# Set up .venv (torch pinned first) and train a sparse TD3 agent on Pendulum-v1 (a few minutes on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh tests
.venv/bin/python -m sb3_sparse demo "$@"
