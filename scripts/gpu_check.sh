#!/usr/bin/env bash
# One short GPU check of the CUDA paths (bf16, bitsandbytes on CUDA), for a lent device
# machine whose image has torch/transformers but not hydra, bitsandbytes, datasets,
# rouge-score: those travel as wheels in .whl/ (see the device tool's README).
# Writes results.json files and logs under $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 QUAIL_CACHE_DIR=/tmp/qcache PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, transformers, bitsandbytes, datasets, hydra; print('torch', torch.__version__, 'transformers', transformers.__version__, 'bnb', bitsandbytes.__version__, 'datasets', datasets.__version__)"
echo "== unit tests that take the CUDA path when a GPU is present"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_quant.py tests/test_generate.py tests/test_analysis.py tests/test_losses.py 2>&1 | tail -8
echo "== toy pipeline on CUDA in bf16, QUAIL, every quantizer"
timeout 120 python3 -m quail_repro +experiment=toy device=cuda model.dtype=bfloat16 method=quail \
  'quant=[none,rtn_int4,bnb_nf4,bnb_fp4,bnb_int8]' hydra.run.dir=/tmp/toy_cuda > $OUT/toy_cuda.log 2>&1
echo "toy exit $?"; cp /tmp/toy_cuda/results.json $OUT/toy_cuda_results.json 2>/dev/null; tail -8 $OUT/toy_cuda.log
echo "== the default run on CUDA (fp32 tiny_llama), from an empty cache"
start=$(date +%s)
timeout 240 python3 -m quail_repro device=cuda hydra.run.dir=/tmp/default_cuda > $OUT/default_cuda.log 2>&1
echo "default exit $? in $(( $(date +%s) - start )) s"; cp /tmp/default_cuda/results.json $OUT/default_cuda_results.json 2>/dev/null; tail -6 $OUT/default_cuda.log
