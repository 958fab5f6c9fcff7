"""Wall-clock of `python -m quail_repro +experiment=table2 seed=0,...` on this machine, two ways.

1. empty cache: generates the corpus, trains target and retrain per seed, unlearns 15 models
   per seed and evaluates all 17 rows at three precisions (issue 23's limit: 15 minutes for 3
   seeds on 2 CPU cores, 5 per seed), then prints where the time went (where_time_went.py);
2. everything cached: the same command again (limit: 30 s).

Extra arguments are passed to both runs as Hydra overrides (how the runs are made and reported:
sweep_benchmark.py).

    .venv/bin/python scripts/benchmark_table2.py [--reuse ROOT] [--seeds N] [overrides...]   # N = 3 by default

--reuse ROOT: only the cached run, on the cache an earlier run left in ROOT (sweep_benchmark.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

from sweep_benchmark import benchmark


def main() -> None:
    args = sys.argv[1:]
    seeds, reuse = 3, None
    if args[:1] == ["--reuse"]:
        reuse, args = Path(args[1]), args[2:]
    if args[:1] == ["--seeds"]:
        seeds, args = int(args[1]), args[2:]
    overrides = [f"seed={','.join(str(s) for s in range(seeds))}", *args]
    # issue 23: 15 minutes for 3 seeds from an empty cache (5 per seed), 30 s with everything cached
    benchmark("table2", {"empty cache": 5 * 60 * seeds, "everything cached": 30}, overrides, reuse)


if __name__ == "__main__":
    main()
