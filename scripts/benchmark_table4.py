"""Wall-clock of `python -m quail_repro +experiment=table4` (the classification table) on this machine.

1. empty cache: generates the posts, fine-tunes the target and retrain classifiers, unlearns 7
   models and evaluates all 9 rows at three precisions with the bucket analysis (limit: 10
   minutes on 2 CPU cores; aim: 6, since other 2-core machines were measured 1.6x slower);
2. everything cached: the same command again (limit: 1 minute).

Extra arguments are passed to both runs as Hydra overrides (e.g. seed=0,1,2; the limits are per
seed); how the runs are made and reported: sweep_benchmark.py.

    .venv/bin/python scripts/benchmark_table4.py [overrides...]
"""
from __future__ import annotations

import sys

from sweep_benchmark import benchmark


def main() -> None:
    overrides = sys.argv[1:]
    seeds = next((len(o.split("=", 1)[1].split(",")) for o in overrides if o.startswith("seed=")), 1)
    benchmark("table4", {"empty cache": 10 * 60 * seeds, "everything cached": 60}, overrides)


if __name__ == "__main__":
    main()
