#!/usr/bin/env bash
# The GPU end of +experiment=scale_search (issue 10): the widths a 2-core CPU cannot reach, hidden
# 1024 and 2048 (FFN 2752 / 5440, 16 / 32 heads, 4 layers), each with fp32 storage and with native
# bf16 end to end (scale_storage/bf16_native: target and retrain trained and stored in bf16,
# unlearning in place in bf16, evaluation in bf16, as the reference [1]), evaluated with the
# bitsandbytes CUDA kernels (bnb_nf4) and rtn_int4. The corpus, 200 unlearning steps, lrs
# (1e-5, 1e-4) and seeds (0, 1) are the CPU part's, so these rows continue its width axis.
# 16 jobs; expected 4-6 minutes on one H100 (an estimate from model size: no GPU was lent when this
# was written); `timeout 570` keeps it under 10 minutes, and the table, rebuilt at the end from the
# run folders, lists what finished and what did not.
#   bash scripts/gpu_scale_search.sh [OUT_DIR]   # default: $OUT (the device tool's), else outputs/tables
# Writes OUT_DIR/scale_search_gpu/: scale_search.{md,csv,tex,png} and one folder per job (results.json);
# the log is OUT_DIR/scale_search_gpu.log. Models stay in $QUAIL_CACHE_DIR (default /tmp/qcache).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-outputs/tables}}
PY=${PYTHON:-python3}
mkdir -p "$OUT_DIR"
if compgen -G ".whl/*.whl" > /dev/null; then  # a device image without hydra, bitsandbytes ...: wheels travel along
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 QUAIL_CACHE_DIR=${QUAIL_CACHE_DIR:-/tmp/qcache} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
start=$(date +%s)
timeout 570 $PY -m quail_repro +experiment=scale_search '+experiment/scale_width=w1024,w2048' '+experiment/scale_storage=fp32,bf16_native' device=cuda logger=none "hydra.sweep.dir=$OUT_DIR/scale_search_gpu" > "$OUT_DIR/scale_search_gpu.log" 2>&1
echo "sweep exit $? after $(( $(date +%s) - start )) s (124: stopped by the timeout)"
$PY -m quail_repro.report "$OUT_DIR/scale_search_gpu"
