"""Check table2's rows against issue 19's calibration bounds, per seed and per numeric machine.

    .venv/bin/python scripts/check_bounds.py outputs/tables/table2/<dir> [more sweep dirs ...]

Reads every results.json under the given folders (a sweep's job folders), groups the rows by the
numeric environment that made them (results.json's machine.numerics: kernel level, MKL path,
threads, deterministic) and by seed, and prints each method's full-precision KnowMem-f and KnowMem-r
against its target's, with the steps it ran. Exit status 1 when a bound fails or a row is missing.

The bounds (the acceptance criteria of issue 19, section 3, not settings of the harness):
- the target: VerbMem-f >= 80, KnowMem-f >= 75, KnowMem-r >= 70 on each seed; sd of KnowMem-f <= 3;
- ga and npo (no retain term): KnowMem-f <= 0.5 x the target's;
- the regularized methods (and quail variants): also KnowMem-r >= 0.6 x the target's.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from quail_repro.results import read_results

FORGET_SHARE, RETAIN_SHARE = 0.5, 0.6
TARGET_MIN = {"verbmem_f": 80.0, "knowmem_f": 75.0, "knowmem_r": 70.0}
TARGET_SD_MAX = 3.0
NO_RETAIN_TERM = ("ga", "npo")
ROWS = ("ga", "ga_gdr", "ga_klr", "npo", "npo_gdr", "npo_klr")


def machine_label(results) -> str:
    machine = results.machine or {}
    env = machine.get("numerics") or {}
    branch = (env.get("blas") or {}).get("branch", "?")
    branch = "own choice (CBWR off)" if branch == "OFF" else branch  # what mkl_cbwr_get reports when unset
    # the CPU too: portable mode's bits differ between an Intel and an AMD CPU (numerics.md, section 5)
    return (f"{machine.get('cpu', '?')}: {env.get('cpu_capability', '?')} / MKL {branch} / {env.get('threads', '?')} thread(s)"
            f"{' / deterministic' if env.get('deterministic') else ''}")


def load(dirs: list[str]):
    rows = defaultdict(dict)  # machine -> (method, seed) -> Results
    for d in dirs:
        for path in sorted(Path(d).rglob("results.json")):
            r = read_results(path)
            if r.finished:
                row = rows[machine_label(r)]
                if (r.method, r.seed) in row:  # the later folder wins; say so rather than hide a run
                    print(f"note: {path} replaces an earlier {r.method} seed {r.seed} run", file=sys.stderr)
                row[r.method, r.seed] = r
    return rows


def check(rows: dict, methods: tuple[str, ...]) -> tuple[list[str], int]:
    lines, failures = [], 0
    seeds = sorted({seed for _, seed in rows})
    targets = {s: rows.get(("target", s)) for s in seeds}
    lines.append("| row | seed | VerbMem-f | KnowMem-f | KnowMem-r | bound | steps | verdict |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for s, t in targets.items():
        if t is None:
            lines.append(f"| target | {s} | – | – | – | | | MISSING |")
            failures += 1
            continue
        v = {k: t.metric("none", k) for k in TARGET_MIN}
        ok = all(v[k] is not None and v[k] >= lo for k, lo in TARGET_MIN.items())
        failures += not ok
        lines.append(f"| target | {s} | {v['verbmem_f']:.1f} | {v['knowmem_f']:.1f} | {v['knowmem_r']:.1f} | "
                     f"≥ 80 / 75 / 70 | | {'ok' if ok else 'FAIL'} |")
    known = [t.metric("none", "knowmem_f") for t in targets.values() if t is not None]
    if len(known) >= 2:
        sd = statistics.stdev(known)
        failures += sd > TARGET_SD_MAX
        lines.append(f"| target sd of KnowMem-f | | | {sd:.2f} | | ≤ {TARGET_SD_MAX} | | {'ok' if sd <= TARGET_SD_MAX else 'FAIL'} |")
    for m in methods:
        for s in seeds:
            r, t = rows.get((m, s)), targets[s]
            if r is None or t is None:
                lines.append(f"| {m} | {s} | – | – | – | | | MISSING |")
                failures += 1
                continue
            vf, kf, kr = (r.metric("none", k) for k in ("verbmem_f", "knowmem_f", "knowmem_r"))
            f_max = FORGET_SHARE * t.metric("none", "knowmem_f")
            r_min = RETAIN_SHARE * t.metric("none", "knowmem_r")
            ok = kf is not None and kf <= f_max
            bound = f"KnowMem-f ≤ {f_max:.1f}"
            if m.split("_")[-1] not in NO_RETAIN_TERM and m not in NO_RETAIN_TERM:
                ok = ok and kr is not None and kr >= r_min
                bound += f", KnowMem-r ≥ {r_min:.1f}"
            u = r.unlearning
            steps = "–" if u is None or u.steps is None else f"{u.steps}{' (stopped)' if u.stopped_early else ''}"
            if u is not None and u.status != "ok":
                ok, steps = False, u.status
            failures += not ok
            fmt = lambda x: "–" if x is None else f"{x:.1f}"  # noqa: E731
            lines.append(f"| {m} | {s} | {fmt(vf)} | {fmt(kf)} | {fmt(kr)} | {bound} | {steps} | "
                         f"{'ok' if ok else 'FAIL'} |")
    return lines, failures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="+")
    p.add_argument("--methods", default=",".join(ROWS), help="comma-separated rows besides the target")
    args = p.parse_args()
    machines = load(args.dirs)
    if not machines:
        print("no finished results.json under", args.dirs)
        return 1
    total = 0
    for label, rows in machines.items():
        lines, failures = check(rows, tuple(args.methods.split(",")))
        total += failures
        print(f"\n## {label}: {'all bounds met' if not failures else f'{failures} failed or missing'}\n")
        print("\n".join(lines))
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
