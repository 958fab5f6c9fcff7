#!/usr/bin/env bash
# Set up the llamacpp extra, then run the tests that need it (tests/test_llamacpp.py) and the Q8_0
# consistency check at toy size; the default test suite skips what needs the extra.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_llamacpp.sh
.venv/bin/python -m pytest -q tests/test_llamacpp.py "$@"
