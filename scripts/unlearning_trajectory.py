"""KnowMem-f, KnowMem-r and the forget NLL along one unlearning run, every N steps.

    .venv/bin/python scripts/unlearning_trajectory.py --every 5 --out traj.json method=ga_gdr seed=1 numerics=portable

Composes the config like `python -m quail_repro` (overrides as arguments), takes the target from
the cache (training it if missing), and unlearns with the method's settings but without stopping
early: at every check it records the forget blocks' mean NLL (what method.early_stop compares
with ratio x the holdout NLL) and both KnowMem scores, greedily, as the evaluation computes them.
What it is for: seeing where a recipe's trajectory crosses the bounds, and which forget NLL goes
with it (docs/results/calibration.md). Prints one JSON line per check; --out writes them all.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch
from hydra import compose, initialize_config_dir

from quail_repro import CONF_DIR, numerics, stages
from quail_repro.eval.muse_eval import MuseEval, knowmem_score
from quail_repro.train import CAUSAL_LM, EarlyStop, UnlearnConfig, unlearn, unlearning_blocks
from quail_repro.validate import check_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--every", type=int, default=5, help="steps between checks")
    p.add_argument("--out", help="write the checks here as JSON")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["logger=none", "quant=[none]", *args.overrides])
    cfg, parts = check_config(cfg)
    numerics.apply(cfg.numerics, cfg.device)
    run = stages.prepare(stages.Run.of(cfg, numerics.open_cache(cfg)))
    m, corpus, method = cfg.method, run.data.corpus, run.parts.method
    if method is None or run.data.classification:
        raise SystemExit("a language-model unlearning method is needed (not target / retrain / the classifier)")
    model, tok = stages.load(run.models.target, cfg, torch.float32)
    reference = None
    if method.reference_on_forget or method.reference_on_retain:
        reference, _ = stages.load(run.models.target, cfg, torch.float32)
        reference.requires_grad_(False)
    split = m.early_stop.reference_split if m.early_stop is not None else "holdout"
    forget, retain, stop = (unlearning_blocks(tok, corpus.raw[s], m.max_length, m.data_layout)
                            for s in (m.forget_split, m.retain_split, split))
    ev = MuseEval.from_config(cfg.eval)
    checks = []

    def record(row: dict, unlearned) -> None:
        was = unlearned.training
        unlearned.eval()
        with torch.no_grad():
            scores = {s: knowmem_score(unlearned, tok, corpus, ev, s) for s in ("forget", "retain")}
        unlearned.train(was)
        checks.append({"step": row["step"] + 1, "forget_nll": row["forget_nll"],
                       "reference_nll": row["stop_threshold"] / NEVER, "knowmem_f": scores["forget"],
                       "knowmem_r": scores["retain"]})
        print(json.dumps(checks[-1]), flush=True)

    settings = replace(UnlearnConfig.from_method(m), early_stop=EarlyStop(args.every, NEVER, split))
    unlearn(model, reference, method, forget, retain if method.uses_retain else None, settings,
            task=CAUSAL_LM, stop_blocks=stop, on_check=record)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"overrides": args.overrides, "every": args.every, "checks": checks}, f, indent=1)


#: a ratio no run reaches: the checks run, the stop never fires
NEVER = 1e9

if __name__ == "__main__":
    main()
