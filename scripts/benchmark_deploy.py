"""Wall-clock of the deployment tables on this machine: `+experiment=table_deploy` (the language
task) and `+experiment=table_deploy_classification`, each from an empty cache, then cached.

Limits (issue 22): 30 minutes from an empty cache on 2 CPU cores for the table (3 seeds; the
limit scales with seed=... overrides), 1 minute cached. Run it with the Python of the venv whose
extras the table should use: .venv (llama.cpp's files if scripts/setup_llamacpp.sh ran; GPTQ and
AWQ recorded as failed) or .venv-gptq (GPTQ; no llama.cpp). Extra arguments are Hydra overrides
for both runs (how they are made and reported: sweep_benchmark.py).

    .venv/bin/python scripts/benchmark_deploy.py [--task classification] [overrides...]
"""
from __future__ import annotations

import sys

from sweep_benchmark import benchmark


def main() -> None:
    args = sys.argv[1:]
    name = "table_deploy"
    if args[:2] == ["--task", "classification"]:
        name, args = "table_deploy_classification", args[2:]
    seeds = next((len(o.split("=", 1)[1].split(",")) for o in args if o.startswith("seed=")), 3)
    benchmark(name, {"empty cache": 10 * 60 * seeds, "everything cached": 60}, args)


if __name__ == "__main__":
    main()
