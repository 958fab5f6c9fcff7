"""MUSE's four metrics on one model: VerbMem (forget), KnowMem (forget, retain), PrivLeak.

The corpus is duck-typed (quail_repro.data's MuseCorpus or any object with the same
attributes):
    verbmem:  list of {"prompt", "gt"}
    knowmem:  {"forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl"} -> list of
              {"question", "answer"}
    privleak: {"forget", "holdout", ...} -> list of str
The config is ``cfg.eval`` (conf/eval/*.yaml, a DictConfig or a dict), read once into the typed
:class:`MuseEval`: every field is required; the values live in the config.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from quail_repro.errors import ConfigError, DataError, int_option
from quail_repro.eval.generate import _eval_mode, generate, sequence_token_logprobs
from quail_repro.eval.utility import check_utility
from quail_repro.eval.metrics import (
    KNOWMEM_STOP_STRINGS,
    min_k_percent_score,
    privleak,
    privleak_auc,
    rouge_l_f1,
    truncate_knowmem_answer,
)

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class Decoding:
    do_sample: bool  # MUSE decodes greedily; the reference code [1] sampled VerbMem
    temperature: float
    seed: int


@dataclass(frozen=True)
class VerbMemSettings:
    max_new_tokens: int
    gt_max_tokens: int
    max_items: int | None


@dataclass(frozen=True)
class KnowMemSettings:
    max_new_tokens: int
    n_icl: int
    trailing_space: bool
    max_items: int | None
    prefix_cache: bool
    stop_at_answer_end: bool


@dataclass(frozen=True)
class PrivLeakSettings:
    k: float
    max_length: int | None
    max_items: int | None
    by_length: bool


@dataclass(frozen=True)
class MuseEval:
    """``cfg.eval`` of a MUSE task (conf/eval/muse.yaml), checked: every field is required and its
    value lives in the config. ``from_config`` raises a ConfigError naming a missing or bad option."""
    batch_size: int
    progress: bool
    max_prompt_tokens: int | None
    decoding: Decoding
    verbmem: VerbMemSettings
    knowmem: KnowMemSettings
    privleak: PrivLeakSettings

    @classmethod
    def from_config(cls, node) -> "MuseEval":
        def get(section: str | None, key: str):
            where = node if section is None else node.get(section) if isinstance(node, Mapping) else None
            if not isinstance(where, Mapping) or key not in where:
                raise ConfigError(f"eval option {f'{section}.{key}' if section else key} is missing "
                                  "(see conf/eval/muse.yaml)")
            return where[key]

        def count(section: str | None, key: str, minimum: int, allow_none: bool = False):
            name = f"eval option {f'{section}.{key}' if section else key}"
            return int_option(name, get(section, key), minimum=minimum, allow_none=allow_none)

        decoding = Decoding(bool(get("decoding", "do_sample")), float(get("decoding", "temperature")),
                            int(get("decoding", "seed")))
        if decoding.do_sample and not decoding.temperature > 0:
            raise ConfigError(f"eval option decoding.temperature must be > 0 when sampling, got {decoding.temperature}")
        k = float(get("privleak", "k"))
        if not 0.0 < k <= 1.0:
            raise ConfigError(f"eval option privleak.k must be in (0, 1], got {k}")
        check_utility(node.get("utility"))
        return cls(batch_size=count(None, "batch_size", 1), progress=bool(get(None, "progress")),
                   max_prompt_tokens=count(None, "max_prompt_tokens", 1, allow_none=True), decoding=decoding,
                   verbmem=VerbMemSettings(count("verbmem", "max_new_tokens", 1), count("verbmem", "gt_max_tokens", 1),
                                           count("verbmem", "max_items", 1, allow_none=True)),
                   knowmem=KnowMemSettings(count("knowmem", "max_new_tokens", 1), count("knowmem", "n_icl", 0),
                                           bool(get("knowmem", "trailing_space")),
                                           count("knowmem", "max_items", 1, allow_none=True),
                                           bool(get("knowmem", "prefix_cache")),
                                           bool(get("knowmem", "stop_at_answer_end"))),
                   privleak=PrivLeakSettings(k, count("privleak", "max_length", 2, allow_none=True),
                                             count("privleak", "max_items", 1, allow_none=True),
                                             bool(get("privleak", "by_length"))))


def _head(items: Sequence, max_items: int | None) -> list:
    """The first max_items items (all when None): a fixed, reproducible subset."""
    items = list(items)
    return items if max_items is None else items[:max_items]


def _split(mapping: Mapping, key: str, what: str) -> list:
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


def _verbmem(model, tokenizer, corpus, cfg: MuseEval) -> tuple[float, list[dict]]:
    items = _head(corpus.verbmem, cfg.verbmem.max_items)
    if not items:
        raise DataError("corpus.verbmem is empty")
    _check_fields(items, ("prompt", "gt"), "corpus.verbmem")
    gt_max = cfg.verbmem.gt_max_tokens
    outputs = generate(
        model, tokenizer, [d["prompt"] for d in items],
        max_new_tokens=cfg.verbmem.max_new_tokens,
        batch_size=cfg.batch_size, max_prompt_tokens=cfg.max_prompt_tokens,
        desc="verbmem_f", progress=cfg.progress,
        # Sampling here is the FailureLLMUnlearning reference's VerbMem (temperature 0.9);
        # MUSE itself is greedy, the default.
        do_sample=cfg.decoding.do_sample, temperature=cfg.decoding.temperature, seed=cfg.decoding.seed,
    )
    rows = []
    for d, out in zip(items, outputs):
        gt = _truncate_to_tokens(tokenizer, d["gt"], gt_max)
        rows.append({"prompt": d["prompt"], "gt": gt, "output": out, "rougeL": rouge_l_f1(out, gt)})
    return _mean_x100(rows), rows


def _knowmem(model, tokenizer, corpus, cfg: MuseEval, split: str) -> tuple[float, list[dict]]:
    qa = _head(_split(corpus.knowmem, f"{split}_qa", "knowmem"),
               cfg.knowmem.max_items)
    _check_fields(qa, ("question", "answer"), f"corpus.knowmem[{split + '_qa'!r}]")
    n_icl = cfg.knowmem.n_icl
    icl_absent = f"knowmem/{split}_qa_icl" in (getattr(corpus, "missing", None) or {})
    icl = _split(corpus.knowmem, f"{split}_qa_icl", "knowmem") if n_icl and not icl_absent else []
    if len(icl) < n_icl:
        log.warning("knowmem: %d ICL pairs asked for, corpus has %d for %s; using all it has",
                    n_icl, len(icl), split)
    icl = icl[:n_icl]
    _check_fields(icl, ("question", "answer"), f"corpus.knowmem[{split + '_qa_icl'!r}]")
    outputs = generate(
        model, tokenizer, [knowmem_prompt(icl, d["question"], trailing_space=cfg.knowmem.trailing_space)
                         for d in qa],
        max_new_tokens=cfg.knowmem.max_new_tokens,
        batch_size=cfg.batch_size, max_prompt_tokens=cfg.max_prompt_tokens,
        desc=f"knowmem_{split[0]}", progress=cfg.progress,
        do_sample=False,  # MUSE and the reference both answer greedily
        shared_prefix=cfg.knowmem.prefix_cache,
        stop_strings=KNOWMEM_STOP_STRINGS if cfg.knowmem.stop_at_answer_end else None,
    )
    rows = []
    for d, raw in zip(qa, outputs):
        out = truncate_knowmem_answer(raw)
        rows.append({"question": d["question"], "answer": d["answer"], "output": out,
                     "rougeL": rouge_l_f1(out, d["answer"]),
                     **({"source": d["source"]} if "source" in d else {})})  # MUSE's own items name none
    return _mean_x100(rows), rows


def knowmem_score(model, tokenizer, corpus, cfg: MuseEval, split: str) -> float:
    """KnowMem on ``split`` (forget | retain) alone, x100, as evaluate_muse computes it."""
    return _knowmem(model, tokenizer, corpus, cfg, split)[0]


def _mean_x100(rows: list[dict]) -> float:
    # Per-item rougeL stays on 0..1 (as MUSE logs it); the aggregate is x100.
    return 100.0 * sum(r["rougeL"] for r in rows) / len(rows)


def _privleak_scores(model, tokenizer, corpus, cfg: MuseEval) -> dict[str, list[float]]:
    k, max_length, max_items = cfg.privleak.k, cfg.privleak.max_length, cfg.privleak.max_items
    scores: dict[str, list[float]] = {}
    for split in ("forget", "holdout"):
        texts = _head(_split(corpus.privleak, split, "privleak"), max_items)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise DataError(f"corpus.privleak[{split!r}] items must be strings (item {bad[0]} is not)")
        lps = sequence_token_logprobs(
            model, tokenizer, texts, max_length=max_length,
            batch_size=cfg.batch_size, by_length=cfg.privleak.by_length,
            desc=f"privleak {split}", progress=cfg.progress,
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
    MuseEval.from_config(cfg)


def privleak_auc_of(model, tokenizer, corpus, cfg) -> float:
    """The Min-K% forget-vs-holdout AUC alone: the reference value (AUC_retrain) that
    PrivLeak is measured against, when computed on the retrained model."""
    if _skipped(corpus, "privleak"):
        return None
    with _eval_mode(model):
        s = _privleak_scores(model, tokenizer, corpus, MuseEval.from_config(cfg))
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
    cfg = MuseEval.from_config(cfg)
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
