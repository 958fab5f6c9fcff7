"""MUSE's four metrics on one model: VerbMem (forget), KnowMem (forget, retain), PrivLeak.

The corpus is duck-typed (quail_repro.data's MuseCorpus or any object with the same
attributes):
    verbmem:  list of {"prompt", "gt"}
    knowmem:  {"forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl"} -> list of
              {"question", "answer"}
    privleak: {"forget", "holdout", ...} -> list of str
The config is ``cfg.eval`` (conf/eval/*.yaml): a DictConfig, a dict or any attribute
object with the same fields. Every field is required; the values live in the config.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from quail_repro.errors import ConfigError, DataError
from quail_repro.eval.generate import _eval_mode, generate, sequence_token_logprobs
from quail_repro.eval.utility import check_utility
from quail_repro.eval.metrics import (
    min_k_percent_score,
    privleak,
    privleak_auc,
    rouge_l_f1,
    truncate_knowmem_answer,
)

log = logging.getLogger(__name__)
_MISSING = object()

#: the corpus splits ("subset/split") each metric needs; without one the metric is skipped
NEEDS = {"verbmem_f": ("verbmem/forget",), "knowmem_f": ("knowmem/forget_qa",),
         "knowmem_r": ("knowmem/retain_qa",), "privleak": ("privleak/forget", "privleak/holdout")}


def corpus_notes(corpus) -> dict[str, str]:
    """{metric: why it is skipped or asked differently} for a corpus with absent splits
    (MuseCorpus.missing); empty for a complete corpus."""
    missing = getattr(corpus, "missing", None) or {}
    notes = {}
    for metric, needs in NEEDS.items():
        absent = [n for n in needs if n in missing]
        if absent:
            notes[metric] = f"skipped: the corpus has no {', '.join(absent)}"
    for split in ("forget", "retain"):
        metric, icl = f"knowmem_{split[0]}", f"knowmem/{split}_qa_icl"
        if icl in missing and metric not in notes:
            notes[metric] = f"asked without in-context examples: the corpus has no {icl}"
    return notes


def _skipped(corpus, metric: str) -> bool:
    return corpus_notes(corpus).get(metric, "").startswith("skipped")


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):  # dict and omegaconf DictConfig
        return obj.get(key, _MISSING)
    return getattr(obj, key, _MISSING)


def _opt(cfg: Any, section: str | None, key: str) -> Any:
    node = cfg if section is None else _get(cfg, section)
    value = _MISSING if node is _MISSING or node is None else _get(node, key)
    if value is _MISSING:
        name = f"{section}.{key}" if section else key
        raise ConfigError(f"eval option {name} is missing (see conf/eval/muse.yaml)")
    return value


def _int_opt(cfg: Any, section: str | None, key: str, *, minimum: int, allow_none: bool = False):
    value = _opt(cfg, section, key)
    name = f"{section}.{key}" if section else key
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"eval option {name} must be an integer >= {minimum}"
                          f"{' or null' if allow_none else ''}, got {value!r}")
    return value


def _head(items: Sequence, max_items: int | None) -> list:
    """The first max_items items (all when None): a fixed, reproducible subset."""
    items = list(items)
    return items if max_items is None else items[:max_items]


def _split(mapping: Any, key: str, what: str) -> list:
    try:
        items = mapping[key]
    except (KeyError, TypeError) as e:
        raise DataError(f"corpus.{what} has no split {key!r}") from e
    if not items:
        raise DataError(f"corpus.{what}[{key!r}] is empty")
    return list(items)


def _check_fields(items: list, fields: tuple[str, ...], where: str) -> None:
    for i, d in enumerate(items):
        missing = [f for f in fields if not isinstance(d, Mapping) or f not in d]
        if missing:
            raise DataError(f"{where}[{i}] lacks field(s) {missing}; expected {list(fields)}")


def knowmem_prompt(icl: Sequence[Mapping[str, str]], question: str, trailing_space: bool) -> str:
    """MUSE's few-shot QA prompt: each ICL pair as "Question: {q}\\nAnswer: {a}\\n\\n",
    then "Question: {question}\\nAnswer: ".

    The prompt ends in a space, as MUSE's does. With byte-level BPE a space normally
    starts the next word's token (" Paris"), so the prompt ends in a lone-space token
    and the model must continue with an unusual space-less token (checked on our test
    tokenizer; Llama's SentencePiece "▁" is expected to behave alike, not checked).
    MUSE's published numbers carry that handicap, so the MUSE config keeps the format
    exact; ``trailing_space=False`` (the embedded default's eval config) drops that one
    space, so a tiny model trained on "Answer: X" is asked in the form it learned.
    """
    prefix = "".join(f"Question: {p['question']}\nAnswer: {p['answer']}\n\n" for p in icl)
    prompt = prefix + f"Question: {question}\nAnswer: "
    return prompt if trailing_space else prompt.rstrip(" ")


def _truncate_to_tokens(tokenizer, text: str, n: int) -> str:
    """First n tokens of text, decoded back. Counted as MUSE's reference counts them:
    with the tokenizer's special tokens, so a Llama BOS takes one of the n."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"][:n]
    return tokenizer.decode(ids, skip_special_tokens=True)


def _decoding(cfg: Any) -> dict:
    do_sample = bool(_opt(cfg, "decoding", "do_sample"))
    temperature = float(_opt(cfg, "decoding", "temperature"))
    seed = int(_opt(cfg, "decoding", "seed"))
    if do_sample and not temperature > 0:
        raise ConfigError(f"eval option decoding.temperature must be > 0 when sampling, got {temperature}")
    return {"do_sample": do_sample, "temperature": temperature, "seed": seed}


def _verbmem(model, tokenizer, corpus, cfg) -> tuple[float, list[dict]]:
    items = _head(corpus.verbmem, _int_opt(cfg, "verbmem", "max_items", minimum=1, allow_none=True))
    if not items:
        raise DataError("corpus.verbmem is empty")
    _check_fields(items, ("prompt", "gt"), "corpus.verbmem")
    gt_max = _int_opt(cfg, "verbmem", "gt_max_tokens", minimum=1)
    outputs = generate(
        model, tokenizer, [d["prompt"] for d in items],
        max_new_tokens=_int_opt(cfg, "verbmem", "max_new_tokens", minimum=1),
        batch_size=_int_opt(cfg, None, "batch_size", minimum=1),
        max_prompt_tokens=_int_opt(cfg, None, "max_prompt_tokens", minimum=1, allow_none=True),
        desc="verbmem_f", progress=bool(_opt(cfg, None, "progress")),
        # Sampling here is the FailureLLMUnlearning reference's VerbMem (temperature 0.9);
        # MUSE itself is greedy, the default.
        **_decoding(cfg),
    )
    rows = []
    for d, out in zip(items, outputs):
        gt = _truncate_to_tokens(tokenizer, d["gt"], gt_max)
        rows.append({"prompt": d["prompt"], "gt": gt, "output": out, "rougeL": rouge_l_f1(out, gt)})
    return _mean_x100(rows), rows


def _knowmem(model, tokenizer, corpus, cfg, split: str) -> tuple[float, list[dict]]:
    qa = _head(_split(corpus.knowmem, f"{split}_qa", "knowmem"),
               _int_opt(cfg, "knowmem", "max_items", minimum=1, allow_none=True))
    _check_fields(qa, ("question", "answer"), f"corpus.knowmem[{split + '_qa'!r}]")
    n_icl = _int_opt(cfg, "knowmem", "n_icl", minimum=0)
    icl_absent = f"knowmem/{split}_qa_icl" in (getattr(corpus, "missing", None) or {})
    icl = _split(corpus.knowmem, f"{split}_qa_icl", "knowmem") if n_icl and not icl_absent else []
    if len(icl) < n_icl:
        log.warning("knowmem: %d ICL pairs asked for, corpus has %d for %s; using all it has",
                    n_icl, len(icl), split)
    icl = icl[:n_icl]
    _check_fields(icl, ("question", "answer"), f"corpus.knowmem[{split + '_qa_icl'!r}]")
    outputs = generate(
        model, tokenizer, [knowmem_prompt(icl, d["question"], trailing_space=bool(_opt(cfg, "knowmem", "trailing_space")))
                         for d in qa],
        max_new_tokens=_int_opt(cfg, "knowmem", "max_new_tokens", minimum=1),
        batch_size=_int_opt(cfg, None, "batch_size", minimum=1),
        max_prompt_tokens=_int_opt(cfg, None, "max_prompt_tokens", minimum=1, allow_none=True),
        desc=f"knowmem_{split[0]}", progress=bool(_opt(cfg, None, "progress")),
        do_sample=False,  # MUSE and the reference both answer greedily
    )
    rows = []
    for d, raw in zip(qa, outputs):
        out = truncate_knowmem_answer(raw)
        rows.append({"question": d["question"], "answer": d["answer"], "output": out,
                     "rougeL": rouge_l_f1(out, d["answer"]),
                     **({"source": d["source"]} if "source" in d else {})})  # MUSE's own items name none
    return _mean_x100(rows), rows


def _mean_x100(rows: list[dict]) -> float:
    # Per-item rougeL stays on 0..1 (as MUSE logs it); the aggregate is x100.
    return 100.0 * sum(r["rougeL"] for r in rows) / len(rows)


def _privleak_scores(model, tokenizer, corpus, cfg) -> dict[str, list[float]]:
    k = float(_opt(cfg, "privleak", "k"))
    if not 0.0 < k <= 1.0:
        raise ConfigError(f"eval option privleak.k must be in (0, 1], got {k}")
    max_length = _int_opt(cfg, "privleak", "max_length", minimum=2, allow_none=True)
    max_items = _int_opt(cfg, "privleak", "max_items", minimum=1, allow_none=True)
    scores: dict[str, list[float]] = {}
    for split in ("forget", "holdout"):
        texts = _head(_split(corpus.privleak, split, "privleak"), max_items)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise DataError(f"corpus.privleak[{split!r}] items must be strings (item {bad[0]} is not)")
        lps = sequence_token_logprobs(
            model, tokenizer, texts, max_length=max_length,
            batch_size=_int_opt(cfg, None, "batch_size", minimum=1),
            desc=f"privleak {split}", progress=bool(_opt(cfg, None, "progress")),
        )
        split_scores = []
        for i, lp in enumerate(lps):
            if lp.numel() == 0:
                raise DataError(f"corpus.privleak[{split!r}][{i}] has fewer than 2 tokens")
            split_scores.append(min_k_percent_score(lp, k))
        scores[split] = split_scores
    return scores


def check_eval_config(cfg) -> None:
    """Every eval option, checked before any stage runs (a bad value fails in seconds)."""
    for section, key, minimum, allow_none in (
            ("verbmem", "max_new_tokens", 1, False), ("verbmem", "gt_max_tokens", 1, False),
            ("verbmem", "max_items", 1, True), ("knowmem", "max_new_tokens", 1, False),
            ("knowmem", "n_icl", 0, False), ("knowmem", "max_items", 1, True),
            ("privleak", "max_length", 2, True), ("privleak", "max_items", 1, True),
            (None, "batch_size", 1, False), (None, "max_prompt_tokens", 1, True)):
        _int_opt(cfg, section, key, minimum=minimum, allow_none=allow_none)
    if not 0.0 < float(_opt(cfg, "privleak", "k")) <= 1.0:
        raise ConfigError(f"eval option privleak.k must be in (0, 1], got {_opt(cfg, 'privleak', 'k')}")
    for section, key in (("knowmem", "trailing_space"), (None, "progress")):
        _opt(cfg, section, key)
    _decoding(cfg)
    utility = _get(cfg, "utility")
    check_utility(None if utility is _MISSING else utility)


def privleak_auc_of(model, tokenizer, corpus, cfg) -> float:
    """The Min-K% forget-vs-holdout AUC alone: the reference value (AUC_retrain) that
    PrivLeak is measured against, when computed on the retrained model."""
    if _skipped(corpus, "privleak"):
        return None
    with _eval_mode(model):
        s = _privleak_scores(model, tokenizer, corpus, cfg)
    return privleak_auc(s["forget"], s["holdout"])


def evaluate_muse(model, tokenizer, corpus, cfg, *, auc_retrain: float | None) -> tuple[dict, dict]:
    """Run VerbMem-f, KnowMem-f, KnowMem-r and PrivLeak; return (metrics, generations).

    metrics: verbmem_f, knowmem_f, knowmem_r (mean ROUGE-L F1 x100), privleak_auc
    (0..1) and privleak ((AUC - auc_retrain)/auc_retrain x100; None without auc_retrain).
    generations: per-item records (per-item rougeL on 0..1) and the Min-K% scores, for
    results files and for checking a number by hand.
    KnowMem always decodes greedily; cfg.decoding (sampling) applies to VerbMem only,
    where the FailureLLMUnlearning reference sampled.
    MUSE's reference feeds one prompt at a time. Batching is exact for fp32/bf16 models
    (up to float ties) but not for bitsandbytes models, whose kernels round differently
    with batch shape (int8 also picks outlier columns over the whole batch): use
    batch_size 1 where a quantized number must match the reference's procedure exactly.
    """
    if auc_retrain is not None and not (0.0 < float(auc_retrain) <= 1.0):
        # Checked before the (slow) generation so a bad constant fails fast.
        raise ConfigError(f"auc_retrain must be in (0, 1], got {auc_retrain!r}")
    # a metric whose data the corpus lacks is None (corpus_notes says why), never a zero
    none = (None, [])
    with _eval_mode(model):
        verbmem_f, verbmem_rows = none if _skipped(corpus, "verbmem_f") else _verbmem(model, tokenizer, corpus, cfg)
        knowmem_f, knowmem_f_rows = (none if _skipped(corpus, "knowmem_f")
                                     else _knowmem(model, tokenizer, corpus, cfg, "forget"))
        knowmem_r, knowmem_r_rows = (none if _skipped(corpus, "knowmem_r")
                                     else _knowmem(model, tokenizer, corpus, cfg, "retain"))
        scores = {} if _skipped(corpus, "privleak") else _privleak_scores(model, tokenizer, corpus, cfg)
    auc = privleak_auc(scores["forget"], scores["holdout"]) if scores else None
    metrics = {
        "verbmem_f": verbmem_f,
        "knowmem_f": knowmem_f,
        "knowmem_r": knowmem_r,
        "privleak": None if auc_retrain is None or auc is None else privleak(auc, auc_retrain),
        "privleak_auc": auc,
    }
    generations = {
        "verbmem_f": verbmem_rows,
        "knowmem_f": knowmem_f_rows,
        "knowmem_r": knowmem_r_rows,
        "privleak": scores,
    }
    return metrics, generations
