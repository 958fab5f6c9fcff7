"""What benchmark_table2.py and benchmark_table4.py share: time one `+experiment=NAME` sweep
twice, from an empty cache and then with everything cached, each as a fresh process with its own
sweep folder and W&B offline into a temporary folder, and print the figures against their limits
with the machine and its load average (other work on the machine slows both runs)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import where_time_went
from quail_repro.machine import cpu_name


def timed_sweep(experiment: str, root: Path, label: str, overrides: list[str]) -> float:
    env = dict(os.environ, QUAIL_CACHE_DIR=str(root / "cache"), WANDB_MODE=os.environ.get("WANDB_MODE", "offline"),
               **{v: str(root / "wandb") for v in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR")})
    (root / "wandb").mkdir(parents=True, exist_ok=True)
    sweep = root / label.replace(" ", "_")
    log = root / f"{sweep.name}.log"
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "quail_repro", f"+experiment={experiment}",
                               f"hydra.sweep.dir={sweep}", *overrides], env=env, stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{label}: the sweep failed (exit {proc.returncode}); see {log}")
    return seconds


def benchmark(experiment: str, limits: dict[str, float], overrides: list[str], reuse: Path | None = None) -> None:
    """Run the sweep once per label of ``limits`` ("empty cache", then "everything cached": the
    second reuses the first's cache) and print each wall-clock against its limit in seconds.

    ``reuse``: only the cached run, on the cache of an earlier benchmark's folder (the one it
    printed), e.g. to time a change to the cached path."""
    if reuse is not None:
        root = reuse
        if not (root / "cache").is_dir():
            sys.exit(f"--reuse {root}: no cache folder there (give the folder an earlier benchmark printed)")
        limits = {label: limit for label, limit in limits.items() if label != "empty cache"}
        stamp = time.strftime("%H%M%S")
        limits = {f"{label} {stamp}": limit for label, limit in limits.items()}
    else:
        root = Path(tempfile.mkdtemp(prefix=f"quail_bench_{experiment}_"))
    load_before = os.getloadavg()
    times = {label: timed_sweep(experiment, root, label, overrides) for label in limits}
    load_after = os.getloadavg()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"load average (1/5/15 min) before: {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after: {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}")
    print(f"overrides: {' '.join(overrides) or '(none)'}")
    for label, seconds in times.items():
        verdict = "ok" if seconds <= limits[label] else "OVER"
        print(f"{label + ':':<20} {seconds:7.1f} s  ({seconds / 60:4.1f} min; limit {limits[label]:.0f} s: {verdict}; "
              f"headroom {limits[label] / seconds:.2f}x, want 1.6x)")
    if "empty cache" in times:
        print(where_time_went.report(root / "cache", [root / "empty_cache"]))
    print(f"table: {root / 'empty_cache' / (experiment + '.md')}; logs: {root}/*.log")
