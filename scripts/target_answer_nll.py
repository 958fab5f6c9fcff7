"""How well each cached target knows its QA facts, by NLL: a candidate state for a target-side stop.

For every target in a cache (QUAIL_CACHE_DIR or --cache), the mean NLL per token of each KnowMem
answer after "Question: q\\nAnswer:" (no in-context examples), over the forget and the retain QA,
and the forget split's four worst answers. Prints one line per target with the numeric machine
that built it (provenance.json) and its seed and epochs (spec.json).

    python scripts/target_answer_nll.py --cache /path/to/cache [--epochs 30]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from omegaconf import open_dict

from quail_repro.cache import Cache
from quail_repro.compose import compose_config
from quail_repro.losses import token_logprobs
from quail_repro.models.base import ModelRef
from quail_repro.stages import Run, load, prepare_data


def answer_nlls(model, tok, items) -> list[tuple[float, int]]:
    """(summed NLL, token count) of each item's answer after its question."""
    out = []
    for it in items:
        prompt = tok(f"Question: {it['question']}\nAnswer:", add_special_tokens=True)["input_ids"]
        answer = tok(" " + it["answer"], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + answer])
        with torch.no_grad():
            nll = -token_logprobs(model(ids).logits[0, :-1], ids[0, 1:])[len(prompt) - 1:]
        out.append((nll.sum().item(), len(answer)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=os.environ.get("QUAIL_CACHE_DIR", "outputs/cache"))
    ap.add_argument("--epochs", type=int, default=None, help="only targets trained this many epochs")
    ap.add_argument("overrides", nargs="*", help="config overrides that select the corpus (default: the embedded one)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = compose_config(args.overrides)
    with open_dict(cfg):
        cfg.device = "cpu"
    corpus = prepare_data(Run.of(cfg, Cache(Path(args.cache)))).corpus
    for entry in sorted(p for p in (Path(args.cache) / "target").glob("target-*") if p.is_dir()):
        spec = json.loads((entry / "spec.json").read_text())
        if args.epochs is not None and spec["train"]["epochs"] != args.epochs:
            continue
        built = json.loads((entry / "provenance.json").read_text())["built_by"]
        model, tok = load(ModelRef(str(entry), entry.name, str(entry)), cfg, torch.float32)
        forget = answer_nlls(model, tok, corpus.knowmem["forget_qa"])
        retain = answer_nlls(model, tok, corpus.knowmem["retain_qa"])
        mean = lambda xs: sum(s for s, _ in xs) / sum(n for _, n in xs)
        worst = sorted(s / n for s, n in forget)[-4:]
        print(f"{entry.name}  {built['cpu_capability']}/{built.get('torch_threads')}t  seed {spec['train']['seed']}  "
              f"epochs {spec['train']['epochs']}  forget answer NLL {mean(forget):.4f} "
              f"(worst {', '.join(f'{w:.2f}' for w in worst)})  retain {mean(retain):.4f}", flush=True)


if __name__ == "__main__":
    main()
