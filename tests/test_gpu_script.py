"""scripts/gpu_leverage.sh, dry: the same script (sweep, timings, report) on the CPU at toy
size, so the GPU run cannot rot between the sessions that have a GPU."""
import os
import subprocess
import sys
from pathlib import Path

import yaml

from quail_repro.results import read_results

ROOT = Path(__file__).resolve().parent.parent


def test_the_gpu_script_runs_dry_on_the_cpu_largest_shape_first(tmp_path):
    env = {**os.environ, "QUAIL_DRY_RUN": "1", "PYTHON": sys.executable, "QUAIL_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_leverage.sh"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=900)
    log = (tmp_path / "leverage_gpu.log").read_text() if (tmp_path / "leverage_gpu.log").exists() else ""
    assert done.returncode == 0 and "sweep exit 0" in done.stdout, done.stdout + done.stderr + log[-3000:]
    jobs = sorted((tmp_path / "leverage_gpu").glob("*/results.json"), key=lambda p: int(p.parent.name.split("_")[0]))
    assert len(jobs) == 4 and all(read_results(p).status == "ok" for p in jobs)
    first = yaml.safe_load((jobs[0].parent / ".hydra" / "overrides.yaml").read_text())
    assert "+experiment/leverage_arch=d4w2048" in first  # the largest first: a timeout loses the small ones
    for p in jobs:  # each job's time printed, and no per-weight array kept
        assert f"{p.parent.name}: ok, " in done.stdout
        assert not list((tmp_path / "cache").rglob("*.pt"))
    assert (tmp_path / "leverage_gpu" / "leverage.md").exists()
