#!/usr/bin/env bash
# QUAIL's hinge on the embedded default: gamma x margin (Hydra multirun, basic launcher).
# margin=auto is the paper's reading (half the rtn_int4 step on the target's weights, in
# logit units); the numbers are logit-space l2 margins around the ~35 that GA_GDR's
# unlearning already moves forget logits (results: docs/results/quail_hinge.md).
# Usage: bash sweeps/quail_hinge_grid.sh [extra overrides]
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m quail_repro -m method=quail 'quant=[none,rtn_int4,bnb_nf4]' \
  method.hinge.gamma=0.1,1,10 method.hinge.margin=auto,50,100 "$@"
