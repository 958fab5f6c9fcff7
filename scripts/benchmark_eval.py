"""MUSE's four metrics on one loaded model, the reference procedure against the harness's, in one
run: the ratio of their times and whether every score and every generated answer agree.

    .venv/bin/python scripts/benchmark_eval.py [--repeats 3] [--quant bnb_nf4] [overrides]

- reference: one example at a time, every KnowMem prompt whole (eval.batch_size=1,
  eval.knowmem.prefix_cache=false, eval.knowmem.stop_at_answer_end=false): the procedure of MUSE's
  code, as settings of this harness;
- harness: the eval config as composed (batched; KnowMem's in-context examples run once and their
  key-value cache reused; a question's generation stops at its answer's end).
The model is the run's target (taken from the cache, trained if missing), loaded once at full
precision or at --quant; both procedures run on it in the same process and threads, alternately,
--repeats times (the median time of each is compared). Overrides compose as for
`python -m quail_repro` (e.g. numerics.threads=1, seed=1, model=... dataset=... eval=muse).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from quail_repro import CONF_DIR, numerics, stages
from quail_repro.eval.muse_eval import evaluate_muse
from quail_repro.machine import cpu_name
from quail_repro.validate import check_config

METRICS = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak_auc")
OUTPUTS = ("verbmem_f", "knowmem_f", "knowmem_r")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quant", default="none", help="a conf/quant choice to load the model at")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["logger=none", f"quant=[{args.quant}]", "method=target", *args.overrides])
    cfg, parts = check_config(cfg)
    numerics.apply(cfg.numerics, cfg.device)
    run = stages.prepare(stages.Run.of(cfg, numerics.open_cache(cfg)))
    model, tok = stages.load(run.models.target, cfg, run.models.dtype, stages._quantizer(run, args.quant))
    fast = OmegaConf.merge(cfg.eval, {"progress": False})
    reference = OmegaConf.merge(fast, {"batch_size": 1,
                                       "knowmem": {"prefix_cache": False, "stop_at_answer_end": False}})
    times, results = {"reference": [], "harness": []}, {}
    for _ in range(args.repeats):
        for name, settings in (("reference", reference), ("harness", fast)):
            start = time.perf_counter()
            results[name] = evaluate_muse(model, tok, run.data.corpus, settings, auc_retrain=None)
            times[name].append(time.perf_counter() - start)
    (ref_metrics, ref_out), (our_metrics, our_out) = results["reference"], results["harness"]
    print(f"machine: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"device {cfg.device}, model {cfg.model.name} at {args.quant}, eval={cfg.eval.task} "
          f"(batch_size {cfg.eval.batch_size}, prefix_cache {cfg.eval.knowmem.prefix_cache}, "
          f"stop_at_answer_end {cfg.eval.knowmem.stop_at_answer_end})")
    for m in METRICS:
        a, b = ref_metrics[m], our_metrics[m]
        print(f"{m:<13} reference {a!s:<22} harness {b!s:<22} {'same' if a == b else 'DIFFERENT'}")
    for m in OUTPUTS:
        same = sum(x["output"] == y["output"] for x, y in zip(ref_out[m], our_out[m]))
        print(f"{m:<13} generated answers identical: {same} of {len(ref_out[m])}")
    t_ref, t_our = statistics.median(times["reference"]), statistics.median(times["harness"])
    print(f"time (median of {args.repeats}): reference {t_ref:.2f} s, harness {t_our:.2f} s: "
          f"{t_ref / t_our:.1f}x (goal: 20x on the embedded default's CPU)")


if __name__ == "__main__":
    main()
