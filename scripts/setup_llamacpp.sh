#!/usr/bin/env bash
# The llamacpp extra (conf/quant/llamacpp_*.yaml, scripts/llamacpp_consistency.py): llama-cpp-python,
# which builds llama.cpp from source (cmake and a C++ compiler; minutes on 2 cores, once: pip keeps
# the built wheel in its cache, so a second venv installs it in seconds).
# GGML_NATIVE=OFF: a library that runs on any x86-64 CPU, not only the one that built it (the
# quantizer is llama.cpp's scalar reference code either way; inference is slower without it).
#   bash scripts/setup_llamacpp.sh               # into .venv (made by scripts/setup.sh if absent)
#   bash scripts/setup_llamacpp.sh .venv-gptq    # into another venv that exists (setup_gptq.sh does)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
if [ "$VENV" = .venv ]; then
  [ -x .venv/bin/python ] || bash scripts/setup.sh
elif [ ! -x "$VENV/bin/python" ]; then
  echo "setup_llamacpp.sh: no venv at $VENV" >&2; exit 1
fi
if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF ${CMAKE_ARGS:-}" \
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    "$VENV/bin/python" -m pip install -q -c constraints.txt "llama-cpp-python==0.3.36" diskcache==5.6.3
fi
