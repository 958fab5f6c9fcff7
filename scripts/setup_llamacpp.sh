#!/usr/bin/env bash
# The llamacpp extra (conf/quant/llamacpp_*.yaml, scripts/llamacpp_consistency.py): llama-cpp-python,
# which builds llama.cpp from source (cmake and a C++ compiler; minutes on 2 cores, once per venv).
# GGML_NATIVE=OFF: a library that runs on any x86-64 CPU, not only the one that built it (the
# quantizer is llama.cpp's scalar reference code either way; inference is slower without it).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF ${CMAKE_ARGS:-}" \
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    .venv/bin/python -m pip install -q -c constraints.txt "llama-cpp-python==0.3.36" diskcache==5.6.3
fi
