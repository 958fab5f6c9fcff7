#!/usr/bin/env bash
# The GPU end of +experiment=leverage (issue 21): how far a confined update moves the forget logits
# at shapes a 2-core CPU cannot reach. The CPU grid (depths 4-16 at width 192, widths 128-256 at
# depth 4) fits a power law to the confined and the unlearning logit shift (docs/results/leverage.md);
# these points test it where it is extrapolated: depth 32 at width 192 (Llama-2-7B's depth), widths
# 1024 and 2048 at depth 4, and 16 x 1024 on the way to 32 x 4096. Native bf16 end to end
# (scale_storage/bf16_native: target and retrain trained and stored in bf16, unlearning in place in
# bf16, as the reference [1]), the converged target, seed 0, both updates (confined: lr 1e-5, 200
# steps; unlearning: lr 1e-4 to the stop), evaluated at full precision and with bitsandbytes' CUDA
# NF4 kernels, with the bucket analysis (a |dw|/step histogram of a few KB, no per-weight array).
# The largest shapes run first, so a timeout loses the small ones; each job's wall-clock and where
# it went (results.json: wall_seconds, provenance.*.build_seconds) is printed at the end.
# 8 jobs, 4 targets; expected 4-6 minutes on one H100 (an estimate from model size: it has NOT run
# on a GPU yet, no GPU was lent); `timeout 570` keeps it under 10 minutes, and the table, rebuilt at
# the end from the run folders, lists what finished and what did not.
#   bash scripts/gpu_leverage.sh [OUT_DIR]   # default: $OUT (the device tool's), else outputs/tables
#   QUAIL_DRY_RUN=1 bash scripts/gpu_leverage.sh DIR   # the same script on the CPU at toy size
#     (4 jobs; tests/test_gpu_script.py runs it so it cannot rot)
# Writes OUT_DIR/leverage_gpu/: leverage.{md,csv,tex,png} and one folder per job (results.json);
# the log is OUT_DIR/leverage_gpu.log. Models stay in $QUAIL_CACHE_DIR (default /tmp/qcache).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-outputs/tables}}
PY=${PYTHON:-python3}
DRY=${QUAIL_DRY_RUN:-0}
mkdir -p "$OUT_DIR"
if compgen -G ".whl/*.whl" > /dev/null; then  # a device image without hydra, bitsandbytes ...: wheels travel along
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 QUAIL_CACHE_DIR=${QUAIL_CACHE_DIR:-/tmp/qcache} PYTHONUNBUFFERED=1
GRID=("+experiment/leverage_arch=d4w2048,d16w1024,d4w1024,d32w192" "+experiment/leverage_update=confined,unlearning"
      "+experiment/leverage_knowledge=converged" "seed=0" "+experiment/scale_storage=bf16_native")
if [ "$DRY" = 1 ]; then
  # the same sweep and report on the CPU, every size shrunk: what is checked is the script, not numbers
  DEVICE=cpu LIMIT=540
  GRID=("+experiment/leverage_arch=d4w2048,d32w192" "+experiment/leverage_update=confined,unlearning"
        "+experiment/leverage_knowledge=converged" "seed=0" "model.arch.hidden_size=64"
        "model.arch.intermediate_size=128" "model.arch.num_attention_heads=1" "model.arch.num_key_value_heads=1" "model.arch.num_hidden_layers=1"
        "model.vocab_size=400" "model.train.epochs=1" "model.train.seq_len=64" "method.max_steps=2"
        "method.max_length=64" "dataset.generator.n_forget=2" "dataset.generator.n_retain1=2"
        "dataset.generator.n_retain2=2" "dataset.generator.n_holdout=2" "dataset.generator.n_icl=1"
        "eval.verbmem.max_new_tokens=4" "eval.verbmem.gt_max_tokens=4" "eval.knowmem.max_new_tokens=4"
        "eval.knowmem.n_icl=1" "eval.privleak.max_length=64" "analysis.max_length=64" "analysis.max_blocks=2")
else
  DEVICE=cuda LIMIT=570
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
fi
start=$(date +%s)
timeout $LIMIT $PY -m quail_repro +experiment=leverage "${GRID[@]}" device=$DEVICE logger=none \
  "hydra.sweep.dir=$OUT_DIR/leverage_gpu" > "$OUT_DIR/leverage_gpu.log" 2>&1
echo "sweep exit $? after $(( $(date +%s) - start )) s (124: stopped by the timeout)"
$PY - "$OUT_DIR/leverage_gpu" <<'PY'
import sys
from pathlib import Path
from quail_repro.results import read_results
for path in sorted(Path(sys.argv[1]).glob("*/results.json")):
    r = read_results(path)
    built = {k.split("-")[0]: v.get("build_seconds") for k, v in r.provenance.items()}
    where = ", ".join(f"{stage} {s:.0f} s" for stage, s in built.items() if isinstance(s, (int, float)) and s >= 0.5)
    print(f"{path.parent.name}: {r.status}, {r.wall_seconds} s ({where or 'all cached'})")
PY
$PY -m quail_repro.report "$OUT_DIR/leverage_gpu"
