"""Where a sweep's time went: the build time of every cache entry, summed by stage, and the jobs'
own wall-clock (results.json), from a cache folder and (optionally) sweep folders.

    .venv/bin/python scripts/where_time_went.py CACHE_DIR [SWEEP_DIR ...]

A stage's time is what its entries took to build (provenance.json's build_seconds, written by
cache.py), so it counts work done, not waiting: two jobs side by side make the core-seconds add up
to about twice the wall-clock. An entry built inside another's build (QUAIL's margin inside an
unlearning run) is counted in both. Entries older than build_seconds are counted as "unknown".
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from quail_repro.cache import COMPLETE, PROVENANCE
from quail_repro.results import read_results


def stage_seconds(cache_dir: Path) -> dict[str, tuple[int, float, int]]:
    """{stage: (entries, seconds summed over those that recorded it, entries without a time)}."""
    out: dict[str, list] = defaultdict(lambda: [0, 0.0, 0])
    for marker in sorted(cache_dir.glob(f"*/*/{COMPLETE}")):
        entry = marker.parent
        row = out[entry.parent.name]
        row[0] += 1
        prov = entry / PROVENANCE
        seconds = json.loads(prov.read_text()).get("build_seconds") if prov.exists() else None
        if seconds is None:
            row[2] += 1
        else:
            row[1] += seconds
    return {stage: tuple(row) for stage, row in out.items()}


def job_seconds(sweep_dirs: list[Path]) -> tuple[int, float]:
    """(jobs with a results.json, their wall_seconds summed)."""
    jobs, total = 0, 0.0
    for sweep in sweep_dirs:
        for path in sorted(sweep.glob("*/results.json")):
            results = read_results(path)
            jobs += 1
            total += results.wall_seconds or 0.0
    return jobs, total


def report(cache_dir: Path, sweep_dirs: list[Path]) -> str:
    stages = stage_seconds(cache_dir)
    total = sum(s for _, s, _ in stages.values())
    lines = [f"cache builds in {cache_dir} (core-seconds of work; two jobs side by side count twice):",
             f"{'stage':<16}{'entries':>8}{'seconds':>10}{'share':>8}{'per entry':>11}"]
    for stage, (n, seconds, unknown) in sorted(stages.items(), key=lambda kv: -kv[1][1]):
        timed = n - unknown
        per = f"{seconds / timed:9.1f} s" if timed else "        -"
        lines.append(f"{stage:<16}{n:>8}{seconds:>10.1f}{100 * seconds / total if total else 0:>7.0f}%{per:>11}"
                     + (f"  ({unknown} without a time)" if unknown else ""))
    lines.append(f"{'all stages':<16}{sum(n for n, _, _ in stages.values()):>8}{total:>10.1f}")
    if sweep_dirs:
        jobs, wall = job_seconds(sweep_dirs)
        lines.append(f"jobs: {jobs}, their own wall-clock summed {wall:.1f} s (from config check to results.json; "
                     "start-up of the process or worker and the table's rebuilds are outside it)")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cache_dir = Path(sys.argv[1])
    if not cache_dir.is_dir():
        sys.exit(f"{cache_dir}: no such cache folder")
    print(report(cache_dir, [Path(p) for p in sys.argv[2:]]))


if __name__ == "__main__":
    main()
