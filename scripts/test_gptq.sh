#!/usr/bin/env bash
# Set up the gptq extra in its own venv (.venv-gptq), then run the tests that need it
# (tests/test_gptq.py: GPTQ on the CPU, codes read back, error against RTN, a toy run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_gptq.sh
.venv-gptq/bin/python -m pytest -q tests/test_gptq.py "$@"
