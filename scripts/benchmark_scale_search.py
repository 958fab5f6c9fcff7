"""Wall-clock of `python -m quail_repro +experiment=scale_search` (issue 10's CPU grid) on this
machine, from an empty cache: trains a target and retrain per width and storage and unlearns and
evaluates all 24 jobs (limit: 60 minutes on 2 CPU cores; aim: under 37, since other 2-core
machines were measured 1.6x slower). The table and figure it writes are the sweep's own.

Pass the launcher that uses both cores, as the README does; extra arguments are Hydra overrides
(how the run is made and reported: sweep_benchmark.py).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_scale_search.py hydra/launcher=joblib hydra.launcher.n_jobs=2
"""
from __future__ import annotations

import sys

from sweep_benchmark import benchmark


def main() -> None:
    benchmark("scale_search", {"empty cache": 60 * 60}, sys.argv[1:])


if __name__ == "__main__":
    main()
