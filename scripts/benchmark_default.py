"""Wall-clock of the default run (`python -m quail_repro`) on this machine, three ways.

1. first run: empty cache, so it generates the corpus and trains target and retrain;
2. cached target: the target/retrain/corpus entries kept, unlearning and evaluation redone;
3. fully cached: every stage comes from the cache.
Each is a fresh `python -m quail_repro` process (import time included). Extra
arguments are passed to every run as Hydra overrides.

    .venv/bin/python scripts/benchmark_default.py [overrides...]
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from quail_repro.machine import cpu_name


def timed_run(cache: Path, run_dir: Path, overrides: list[str]) -> float:
    env = dict(os.environ, QUAIL_CACHE_DIR=str(cache))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "quail_repro", f"hydra.run.dir={run_dir}", *overrides],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    overrides = sys.argv[1:]
    root = Path(tempfile.mkdtemp(prefix="quail_bench_"))
    cache = root / "cache"
    first = timed_run(cache, root / "run1", overrides)
    for stage in ("unlearn", "eval"):
        shutil.rmtree(cache / stage, ignore_errors=True)
    cached_target = timed_run(cache, root / "run2", overrides)
    cached_all = timed_run(cache, root / "run3", overrides)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores")
    print(f"overrides: {' '.join(overrides) or '(defaults)'}")
    print(f"first run (trains target and retrain): {first:7.1f} s   (target: <= 480 s)")
    print(f"cached target (unlearn + evaluate):    {cached_target:7.1f} s   (target: <= 180 s)")
    print(f"fully cached:                           {cached_all:7.1f} s")
    print(f"results: {root}/run1/results.json")


if __name__ == "__main__":
    main()
