"""Does the harness evaluate a llama.cpp file as llama.cpp runs it? One model, one Q8_0 file: the
harness's evaluation of the file read back (quant=llamacpp_q8_0) against llama.cpp's own inference
of the same file (llama-cpp-python), on the same token ids, greedy.

    .venv/bin/python scripts/llamacpp_consistency.py [--ftype Q8_0] [--texts 8] [overrides]

Prints, per metric, both scores and how many generations are token for token the same, and the
logits of both engines on --texts forget texts (max and mean |difference|, and how often the
top-1 token agrees). llama.cpp's Q8_0 kernels also round the activations to 8 bits, so small
logit differences are expected; the question is whether they change answers. Needs the llamacpp
extra (scripts/setup_llamacpp.sh). Overrides compose as for `python -m quail_repro` (seed=1, ...).
Exits 1 unless every score is within one item's worth and the top-1 tokens agree at >= 99% of positions.
"""
from __future__ import annotations

import argparse
import tempfile
from collections import Counter

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from quail_repro import CONF_DIR, numerics, stages
from quail_repro.eval.generate import _token_ids
from quail_repro.eval.metrics import rouge_l_f1, truncate_knowmem_answer
from quail_repro.eval.muse_eval import evaluate_muse, knowmem_prompt
from quail_repro.machine import cpu_name
from quail_repro.quant.base import load_full_precision
from quail_repro.quant.llama_cpp import import_llama_cpp, llama_cpp_version


#: the share of positions whose top-1 token must agree
TOP1_AGREEMENT = 0.99


def llama_cpp_greedy(llm, tokenizer, prompts: list[str], *, max_new_tokens: int, max_prompt_tokens) -> list[str]:
    """Greedy continuations by llama.cpp, from the token ids the harness's generate() feeds its model."""
    outputs = []
    for ids in _token_ids(tokenizer, prompts, max_tokens=max_prompt_tokens, keep_end=True):
        new = []
        for token in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
            if len(new) == max_new_tokens:
                break
        outputs.append(tokenizer.decode(new, skip_special_tokens=True))
    return outputs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ftype", default="Q8_0", help="llama.cpp file type (conf/quant/llamacpp_*.yaml)")
    p.add_argument("--texts", type=int, default=8, help="forget texts whose logits are compared")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    quant = f"llamacpp_{args.ftype.lower()}"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["logger=none", f"quant=[{quant}]", "method=target", *args.overrides])
    from quail_repro.validate import check_config

    cfg, _ = check_config(cfg)
    numerics.apply(cfg.numerics, cfg.device)
    run = stages.prepare(stages.Run.of(cfg, numerics.open_cache(cfg)))
    quantizer = stages._quantizer(run, quant)
    target = run.models.target
    tok = AutoTokenizer.from_pretrained(target.tokenizer)
    settings = OmegaConf.merge(cfg.eval, {"progress": False})
    llama_cpp = import_llama_cpp()
    corpus, e = run.data.corpus, settings
    with tempfile.TemporaryDirectory(prefix="quail_gguf_") as tmp:
        # one file, evaluated by both: the harness on its tensors read back, llama.cpp on the file
        model = load_full_precision(target.path, dtype=torch.float32, device="cpu")
        dest = quantizer.quantize_file(target.path, model, tmp)
        model = quantizer.load_file(dest, model, dtype=run.models.dtype, device=cfg.device)
        harness_metrics, rows = evaluate_muse(model, tok, corpus, settings, auc_retrain=None)
        llm = llama_cpp.Llama(model_path=str(dest), n_ctx=2048, n_batch=512, n_threads=torch.get_num_threads(),
                              logits_all=True, verbose=False, seed=0)
        print(f"machine: {cpu_name()}, torch {torch.__version__}, llama-cpp-python {llama_cpp_version()}, "
              f"{torch.get_num_threads()} thread(s); model {cfg.model.name} seed {cfg.seed}, {args.ftype}")
        counts = Counter(quantizer.tensor_types.values())
        print("tensors by type in the file: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
        mx = None if e.max_prompt_tokens is None else int(e.max_prompt_tokens)

        # the harness's generations, the same prompts through llama.cpp, scored the same way
        verb = rows["verbmem_f"]
        ours = llama_cpp_greedy(llm, tok, [r["prompt"] for r in verb], max_new_tokens=e.verbmem.max_new_tokens,
                                max_prompt_tokens=mx)
        results = {"verbmem_f": (verb, ours, [100 * rouge_l_f1(o, r["gt"]) for o, r in zip(ours, verb)])}
        for split in ("forget", "retain"):
            key = f"knowmem_{split[0]}"
            qa = rows[key]
            icl = list(corpus.knowmem[f"{split}_qa_icl"])[: e.knowmem.n_icl]
            prompts = [knowmem_prompt(icl, r["question"], trailing_space=e.knowmem.trailing_space) for r in qa]
            raw = llama_cpp_greedy(llm, tok, prompts, max_new_tokens=e.knowmem.max_new_tokens, max_prompt_tokens=mx)
            answers = [truncate_knowmem_answer(o) for o in raw]
            results[key] = (qa, answers, [100 * rouge_l_f1(a, r["answer"]) for a, r in zip(answers, qa)])
        print(f"{'metric':<10} {'harness':>8} {'llama.cpp':>10}  identical generations")
        consistent = True
        for key, (harness_rows, theirs, scores) in results.items():
            same = sum(r["output"] == o for r, o in zip(harness_rows, theirs))
            print(f"{key:<10} {harness_metrics[key]:>8.2f} {np.mean(scores):>10.2f}  {same} of {len(theirs)}")
            consistent &= abs(harness_metrics[key] - np.mean(scores)) <= 100 / len(theirs)  # one item's worth

        # logits on forget texts, position by position
        texts = list(corpus.privleak["forget"])[: args.texts]
        diffs, agree, positions = [], 0, 0
        for ids in _token_ids(tok, texts, max_tokens=int(e.privleak.max_length), keep_end=False):
            llm.reset()
            llm.eval(ids)
            theirs = np.asarray(llm.scores[: len(ids)], dtype=np.float32)
            with torch.inference_mode():
                harness = model(input_ids=torch.tensor([ids])).logits[0].float().numpy()
            diffs.append(np.abs(theirs - harness))
            agree += int((theirs.argmax(-1) == harness.argmax(-1)).sum())
            positions += len(ids)
        d = np.concatenate([x.ravel() for x in diffs])
        print(f"logits on {len(texts)} forget texts ({positions} positions): |difference| max {d.max():.4f}, "
              f"mean {d.mean():.5f}; top-1 token the same at {agree} of {positions} positions")
        consistent &= agree >= TOP1_AGREEMENT * positions
        print(f"consistent (every score within one item's worth, top-1 agreement >= {TOP1_AGREEMENT:.0%}): "
              f"{'yes' if consistent else 'NO'}")
    raise SystemExit(0 if consistent else 1)


if __name__ == "__main__":
    main()
