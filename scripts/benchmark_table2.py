"""Wall-clock of `python -m quail_repro +experiment=table2 seed=0,...` on this machine, two ways.

1. empty cache: generates the corpus, trains target and retrain per seed, unlearns 12 models
   per seed and evaluates all 14 rows at three precisions (limit: 45 minutes for 3 seeds on
   2 CPU cores, 15 minutes per seed);
2. everything cached: the same command again (limit: 1 minute).

Each is a fresh process with its own sweep folder, W&B offline into the temporary folder.
The load average is printed with the figures: other work on the machine slows both.
Extra arguments are passed to both runs as Hydra overrides.

    .venv/bin/python scripts/benchmark_table2.py [--seeds N] [overrides...]   # N = 3 by default
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

def limits(seeds: int) -> dict[str, float]:
    return {"empty cache": 15 * 60 * seeds, "everything cached": 60}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed_sweep(root: Path, label: str, overrides: list[str]) -> float:
    env = dict(os.environ, QUAIL_CACHE_DIR=str(root / "cache"), WANDB_MODE=os.environ.get("WANDB_MODE", "offline"),
               **{v: str(root / "wandb") for v in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR")})
    (root / "wandb").mkdir(parents=True, exist_ok=True)
    sweep = root / label.replace(" ", "_")
    log = root / f"{sweep.name}.log"
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "quail_repro", "+experiment=table2", f"hydra.sweep.dir={sweep}",
                               *overrides], env=env, stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{label}: the sweep failed (exit {proc.returncode}); see {log}")
    return seconds


def main() -> None:
    args = sys.argv[1:]
    seeds = 3
    if args[:1] == ["--seeds"]:
        seeds, args = int(args[1]), args[2:]
    overrides = [f"seed={','.join(str(s) for s in range(seeds))}", *args]
    budget = limits(seeds)
    root = Path(tempfile.mkdtemp(prefix="quail_bench_table2_"))
    load_before = os.getloadavg()
    times = {label: timed_sweep(root, label, overrides) for label in budget}
    load_after = os.getloadavg()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"load average (1/5/15 min) before: {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after: {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}")
    print(f"overrides: {' '.join(overrides) or '(none)'}")
    for label, seconds in times.items():
        verdict = "ok" if seconds <= budget[label] else "OVER"
        print(f"{label + ':':<20} {seconds:7.1f} s  ({seconds / 60:4.1f} min; limit {budget[label] / 60:.0f} min: {verdict})")
    print(f"table: {root / 'empty_cache' / 'table2.md'}; logs: {root}/*.log")


if __name__ == "__main__":
    main()
