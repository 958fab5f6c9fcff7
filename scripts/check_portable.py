"""Does one config give the same numbers on every machine? Runs one job once per emulated machine
(torch's kernel level x MKL's code path x thread count, set in the environment as another CPU would
have them), each from its own empty cache, and prints each machine's metrics, their hash, the
wall-clock, and whether all agree.

    .venv/bin/python scripts/check_portable.py --mode portable [--jobs 2] [overrides...]
    .venv/bin/python scripts/check_portable.py --mode fast --machine avx512,AUTO,2 --machine default,COMPATIBLE,1

Emulation has a limit: it changes what torch and MKL choose on this CPU, not the CPU itself (another
vendor's MKL path, glibc's own per-CPU math routines); docs/results/numerics.md says what was seen.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from quail_repro.machine import cpu_name

ROOT = Path(__file__).resolve().parent.parent


def machines_here() -> list[tuple[str, str, int]]:
    """Every kernel level this CPU can run x MKL's AUTO and COMPATIBLE paths x 1 and 2 threads."""
    best = torch.backends.cpu.get_cpu_capability().lower()
    levels = ["default", "avx2"] + (["avx512"] if best == "avx512" else [])
    return list(itertools.product(levels, ["AUTO", "COMPATIBLE"], [1, 2]))


def run_one(machine: tuple[str, str, int], mode: str, root: Path, overrides: list[str]) -> dict:
    level, branch, threads = machine
    name = f"{level}-{branch}-{threads}"
    env = dict(os.environ, ATEN_CPU_CAPABILITY=level, MKL_CBWR=branch, OMP_NUM_THREADS=str(threads),
               WANDB_MODE="disabled")
    run = root / name
    start = time.perf_counter()
    with open(root / f"{name}.log", "w") as log:
        proc = subprocess.run([sys.executable, "-m", "quail_repro", f"numerics={mode}", "logger=none",
                               f"paths.cache={root / ('cache-' + name)}", f"hydra.run.dir={run}", *overrides],
                              env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        return {"machine": name, "error": f"exit {proc.returncode}, see {root / (name + '.log')}", "seconds": seconds}
    results = json.loads((run / "results.json").read_text())
    metrics = json.dumps(results["metrics"], sort_keys=True)
    return {"machine": name, "seconds": seconds, "metrics": results["metrics"],
            "hash": hashlib.sha256(metrics.encode()).hexdigest()[:12],
            "ran_as": _ran_as(results["machine"]["numerics"])}


def _ran_as(env: dict) -> str:
    """What the run computed with, as its results.json says: kernel level / MKL path / threads."""
    blas = env.get("blas")
    return f"{env.get('cpu_capability')}/{blas.get('branch') if isinstance(blas, dict) else blas}/{env.get('threads')}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="portable", help="numerics config: portable | fast")
    ap.add_argument("--jobs", type=int, default=1, help="machines run side by side")
    ap.add_argument("--machine", action="append", dest="machines",
                    help="level,BRANCH,threads, once per machine (default: every one this CPU can emulate)")
    args, overrides = ap.parse_known_args()
    machines = ([(m.split(",")[0], m.split(",")[1], int(m.split(",")[2])) for m in args.machines]
                if args.machines else machines_here())
    root = Path(tempfile.mkdtemp(prefix=f"quail_portable_{args.mode}_"))
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda m: run_one(m, args.mode, root, overrides), machines))
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; mode {args.mode}; overrides: {' '.join(overrides) or '-'}; "
          f"{len(machines)} emulated machines in {(time.perf_counter() - start) / 60:.1f} min, {args.jobs} at a time")
    for r in rows:
        if "error" in r:
            print(f"{r['machine']:<24} FAILED: {r['error']}")
            continue
        full = r["metrics"].get("none", {})
        shown = ", ".join(f"{k} {v:.2f}" for k, v in full.items() if isinstance(v, float))
        print(f"{r['machine']:<24} {r['seconds']:6.1f} s  metrics {r['hash']}  ran as {r['ran_as']:<22} full: {shown}")
    hashes = {r.get("hash") for r in rows}
    print(f"verdict: {'IDENTICAL' if len(hashes) == 1 and None not in hashes else 'DIFFERENT'} "
          f"({len(hashes)} distinct results.json metrics over {len(rows)} machines); runs in {root}")


if __name__ == "__main__":
    main()
