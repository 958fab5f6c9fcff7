"""Sweeps beyond one process: the launcher configs compose, and two joblib jobs (two loky
processes) that need the same target train it once, the cache's file lock holding across them."""
import fcntl
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from quail_repro.cache import Cache, to_plain

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


def hydra_cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("launcher, target", [
    ("joblib", "JoblibLauncher"), ("submitit_local", "LocalLauncher"), ("submitit_slurm", "SlurmLauncher"),
    ("slurm_gpu", "SlurmLauncher")])
def test_each_launcher_composes(launcher, target):
    assert hydra_cfg(f"hydra/launcher={launcher}").hydra.launcher._target_.endswith(target)


def test_the_slurm_gpu_preset_asks_for_a_gpu_partition_and_is_overridable():
    launcher = hydra_cfg("hydra/launcher=slurm_gpu", "hydra.launcher.partition=a100").hydra.launcher
    assert (launcher.partition, launcher.gpus_per_node, launcher.mem_gb) == ("a100", 1, 64)
    assert launcher.timeout_min > 0 and launcher.cpus_per_task > 0
    assert "export WANDB_MODE=offline" in launcher.setup


def blocked_waiters(lock_file: Path) -> set[int]:
    """Pids blocked in flock() on ``lock_file`` (Linux /proc/locks marks waiters with '->')."""
    ino = os.stat(lock_file).st_ino
    pids = set()
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        if "->" in parts and parts[parts.index("->") + 1] == "FLOCK":
            rest = parts[parts.index("->") + 1:]
            if int(rest[4].split(":")[-1]) == ino:
                pids.add(int(rest[3]))
    return pids


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks")
def test_two_joblib_jobs_share_one_target_trained_once(tmp_path):
    cache, sweep = tmp_path / "cache", tmp_path / "sweep"
    args = ["+experiment=toy", "device=cpu", f"paths.cache={cache}", "quant=[none]", "logger=none",
            "analysis.enabled=false"]
    # hold the corpus entry's lock until both jobs block on it: then they provably run at once,
    # in two processes, and race for every entry after it
    spec = to_plain(hydra_cfg(*args).dataset.generator)
    entry = Cache(cache).path("corpus", spec)
    lock = entry.with_name(entry.name + ".lock")
    lock.parent.mkdir(parents=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        proc = subprocess.Popen([sys.executable, "-m", "quail_repro", "-m", *args, "method=ga,ga_gdr",
                                 "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 300
        while len(waiters := blocked_waiters(lock)) < 2:
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.time() < deadline, "the two jobs never both waited for the corpus"
            time.sleep(0.2)
        fcntl.flock(fh, fcntl.LOCK_UN)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert os.getpid() not in waiters and proc.pid not in waiters  # the jobs ran in their own processes

    logs = "\n".join(p.read_text() for p in sweep.glob("*/*.log"))
    writes = dict((m[1], int(m[0])) for m in re.findall(r"cache write \(pid (\d+)\): \S+/([a-z_]+)-[0-9a-f]+", logs))
    waits = [(int(m[0]), m[1]) for m in re.findall(r"cache hit after wait \(pid (\d+)\): \S+/([a-z_]+)-[0-9a-f]+", logs)]
    # the corpus: built by one job, the other waited for it and did not build it again
    assert writes["corpus"] in waiters
    assert {p for p, s in waits if s == "corpus"} == waiters - {writes["corpus"]}
    # target, retrain and tokenizer: one entry each, written once across both processes
    for stage in ("tokenizer", "target", "retrain"):
        assert len(list((cache / stage).glob(f"{stage}-*[0-9a-f]"))) == 1
        assert len(re.findall(rf"cache write \(pid \d+\): \S+/{stage}-", logs)) == 1
    assert len(list((cache / "unlearn").glob("unlearn-*[0-9a-f]"))) == 2  # ga and ga_gdr: one each
    assert sorted(p.parent.name for p in sweep.glob("*/results.json")) == ["0_ga", "1_ga_gdr"]
