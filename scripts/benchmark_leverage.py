"""Wall-clock of `python -m quail_repro +experiment=leverage` (issue 21's depth x width grid) on this
machine, from an empty cache: 20 bf16 targets (5 shapes x 2 knowledge levels x 2 seeds, each with
its retrain model on retain2) and 40 unlearning jobs, evaluated at full precision and NF4 with the
bucket analysis (limit: 90 minutes on 2 CPU cores). The table and figure it writes are the sweep's own.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_leverage.py hydra/launcher=joblib hydra.launcher.n_jobs=2
"""
from __future__ import annotations

import sys

from sweep_benchmark import benchmark


def main() -> None:
    benchmark("leverage", {"empty cache": 90 * 60}, sys.argv[1:])


if __name__ == "__main__":
    main()
