#!/usr/bin/env bash
# Set everything up, then run the main job on the embedded default (offline, CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m quail_repro "$@"
