"""The stage cache: one build per spec, atomic entries, safe under concurrent jobs."""
import multiprocessing as mp
import time

import pytest

from quail_repro.cache import Cache, config_hash


def test_hash_ignores_key_order_but_not_values():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_build_runs_once_and_entry_is_reused(tmp_path):
    cache, calls = Cache(tmp_path), []

    def build(d):
        calls.append(d)
        (d / "x.txt").write_text("hello")

    first = cache.get_or_build("stage", {"lr": 1e-5}, build)
    second = cache.get_or_build("stage", {"lr": 1e-5}, build)
    assert first == second and len(calls) == 1
    assert (first / "x.txt").read_text() == "hello"
    assert cache.get_or_build("stage", {"lr": 2e-5}, build) != first
    assert len(calls) == 2


def test_failed_build_leaves_no_entry(tmp_path):
    cache = Cache(tmp_path)

    def build(d):
        (d / "partial").write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.get_or_build("stage", {"k": 1}, build)
    assert cache.lookup("stage", {"k": 1}) is None
    assert list((tmp_path / "stage").glob(".tmp-*")) == []


def _racing_build(root, counter):
    def build(d):
        with open(counter, "a") as fh:
            fh.write("built\n")
        time.sleep(0.5)
        (d / "value").write_text("42")

    entry = Cache(root).get_or_build("stage", {"k": "race"}, build)
    assert (entry / "value").read_text() == "42"


def test_two_processes_racing_for_one_entry_build_it_once(tmp_path):
    counter = tmp_path / "count.txt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_racing_build, args=(tmp_path / "cache", counter)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert counter.read_text().count("built") == 1


def test_where_time_went_sums_build_seconds_by_stage(tmp_path):
    """scripts/where_time_went.py adds up each stage's recorded build times (the benchmarks' breakdown)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    cache = Cache(tmp_path / "cache")
    for i, seconds in enumerate((0.05, 0.1)):
        cache.get_or_build("unlearn", {"i": i}, lambda d, s=seconds: time.sleep(s))
    cache.get_or_build("eval", {"i": 0}, lambda d: None)
    recorded = [json.loads(p.read_text())["build_seconds"] for p in (tmp_path / "cache" / "unlearn").glob("*/provenance.json")]
    script = Path(__file__).resolve().parents[1] / "scripts" / "where_time_went.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "cache")], capture_output=True, text=True,
                         check=True).stdout
    unlearn = next(line.split() for line in out.splitlines() if line.startswith("unlearn"))
    assert unlearn[1] == "2" and float(unlearn[2]) == pytest.approx(sum(recorded), abs=0.05)
    assert sum(recorded) >= 0.15
    assert next(line.split() for line in out.splitlines() if line.startswith("eval"))[1] == "1"
