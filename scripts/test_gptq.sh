#!/usr/bin/env bash
# Set up the gptq extra in its own venv (.venv-gptq), then run the tests that need it
# (tests/test_gptq.py: GPTQ on the CPU, codes read back, error against RTN, a toy run; a LoRA test).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_gptq.sh
# and LoRA in the same venv (peft behaves differently once GPTQModel is installed)
.venv-gptq/bin/python -m pytest -q tests/test_gptq.py \
    tests/test_comparators.py::test_lora_is_merged_and_leaves_the_other_weights_alone "$@"
