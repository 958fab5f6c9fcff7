"""What `numerics=portable` costs: one job from an empty cache in each numerics mode, one after the
other on this machine, and the ratio of their wall-clocks (measured in one run).

    .venv/bin/python scripts/benchmark_numerics.py                          # the default job
    .venv/bin/python scripts/benchmark_numerics.py +experiment=toy_learns   # a toy, in about 2 minutes

Each run is a fresh `python -m quail_repro` process with its own empty cache (import time included)
and W&B off. Fast mode runs at torch's default thread count; portable at its pinned one
(conf/numerics/portable.yaml), so the ratio is what a user sees running the same command.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from quail_repro.machine import cpu_name

ROOT = Path(__file__).resolve().parent.parent


def timed(mode: str, root: Path, overrides: list[str]) -> float:
    env = dict(os.environ, WANDB_MODE="disabled")
    start = time.perf_counter()
    with open(root / f"{mode}.log", "w") as log:
        subprocess.run([sys.executable, "-m", "quail_repro", f"numerics={mode}", "logger=none",
                        f"paths.cache={root / ('cache-' + mode)}", f"hydra.run.dir={root / mode}", *overrides],
                       env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def main() -> None:
    overrides = sys.argv[1:]
    root = Path(tempfile.mkdtemp(prefix="quail_bench_numerics_"))
    load_before = os.getloadavg()[0]
    seconds = {mode: timed(mode, root, overrides) for mode in ("fast", "portable")}
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"load average before {load_before:.2f}, after {os.getloadavg()[0]:.2f}")
    print(f"overrides: {' '.join(overrides) or '(the default job)'}")
    for mode, s in seconds.items():
        print(f"{mode + ':':<10} {s:7.1f} s from an empty cache")
    ratio = seconds["portable"] / seconds["fast"]
    print(f"portable / fast: {ratio:.2f}x (the default becomes portable at <= 1.3x: "
          f"{'yes' if ratio <= 1.3 else 'no'}); runs in {root}")


if __name__ == "__main__":
    main()
