"""Wall-clock of `python -m quail_repro +experiment=table4` (the classification table) on this machine.

1. empty cache: generates the posts, fine-tunes the target and retrain classifiers, unlearns 7
   models and evaluates all 9 rows at three precisions with the bucket analysis (limit: 10
   minutes on 2 CPU cores; aim: 6, since other 2-core machines were measured 1.6x slower);
2. everything cached: the same command again (limit: 1 minute).

Each is a fresh process with its own sweep folder, W&B offline into the temporary folder; the
load average is printed with the figures. Extra arguments are passed to both runs as Hydra
overrides (e.g. seed=0,1,2; the limits are per seed).

    .venv/bin/python scripts/benchmark_table4.py [overrides...]
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_table2 import cpu_name  # noqa: E402  (one way to name the CPU)


def timed_sweep(root: Path, label: str, overrides: list[str]) -> float:
    env = dict(os.environ, QUAIL_CACHE_DIR=str(root / "cache"), WANDB_MODE=os.environ.get("WANDB_MODE", "offline"),
               **{v: str(root / "wandb") for v in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR")})
    (root / "wandb").mkdir(parents=True, exist_ok=True)
    sweep = root / label.replace(" ", "_")
    log = root / f"{sweep.name}.log"
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "quail_repro", "+experiment=table4", f"hydra.sweep.dir={sweep}",
                               *overrides], env=env, stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{label}: the sweep failed (exit {proc.returncode}); see {log}")
    return seconds


def main() -> None:
    overrides = sys.argv[1:]
    seeds = next((len(o.split("=", 1)[1].split(",")) for o in overrides if o.startswith("seed=")), 1)
    budget = {"empty cache": 10 * 60 * seeds, "everything cached": 60}
    root = Path(tempfile.mkdtemp(prefix="quail_bench_table4_"))
    load_before = os.getloadavg()
    times = {label: timed_sweep(root, label, overrides) for label in budget}
    load_after = os.getloadavg()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"load average (1/5/15 min) before: {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after: {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}")
    print(f"overrides: {' '.join(overrides) or '(none)'}")
    for label, seconds in times.items():
        verdict = "ok" if seconds <= budget[label] else "OVER"
        print(f"{label + ':':<20} {seconds:7.1f} s  ({seconds / 60:4.1f} min; limit {budget[label] / 60:.0f} min: {verdict})")
    print(f"table: {root / 'empty_cache' / 'table4.md'}; logs: {root}/*.log")


if __name__ == "__main__":
    main()
