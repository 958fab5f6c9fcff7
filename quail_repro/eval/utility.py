"""Utility: lm-eval tasks on the evaluated model at a precision, through lm-eval's HFLM
wrapped around the model already in memory (no second load).

``eval.utility`` (conf/eval/utility/): ``tasks`` (lm-eval task names; empty = off),
``corpus_tasks`` (true: the tasks are the project's own, lm_eval_tasks/*.yaml, with data
made from the run's corpus; false: lm-eval's registry, e.g. MMLU), ``num_fewshot``,
``limit``, ``batch_size``, ``bootstrap_iters`` (lm-eval's stderr; 0 = none) and ``data``
(how the corpus tasks are made).

The corpus tasks are defined in the shipped YAMLs; a run writes, into a temporary folder, a
two-line YAML per task that includes the shipped one and names its data file, and loads it
with ``TaskManager(include_path=that folder, include_defaults=False)``: offline, and lm-eval
never sees a task without its data.
"""
from __future__ import annotations

import json
import random
import re
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from quail_repro.errors import ConfigError, DataError, int_option

TASK_DIR = Path(__file__).parent / "lm_eval_tasks"
#: the project's own tasks and the data file each reads
CORPUS_TASKS = {"quail_retain_mc": "retain_mc.jsonl", "quail_retain_cloze": "retain_cloze.jsonl"}


def enabled(u) -> bool:
    return u is not None and bool(u.get("tasks"))


def check_utility(u) -> None:
    """Every eval.utility setting, before any stage runs."""
    if not enabled(u):
        return
    if any(not isinstance(t, str) for t in u.tasks):
        raise ConfigError(f"eval.utility.tasks must be lm-eval task names, got {list(u.tasks)!r}")
    int_option("eval.utility.num_fewshot", u.get("num_fewshot"), minimum=0, allow_none=True)
    int_option("eval.utility.limit", u.get("limit"), minimum=1, allow_none=True)
    int_option("eval.utility.batch_size", u.get("batch_size"), minimum=1)
    int_option("eval.utility.bootstrap_iters", u.get("bootstrap_iters"), minimum=0)
    if u.get("corpus_tasks"):
        unknown = sorted(set(u.tasks) - set(CORPUS_TASKS))
        if unknown:
            raise ConfigError(f"eval.utility.tasks {unknown}: the corpus tasks are {sorted(CORPUS_TASKS)} "
                              "(lm-eval's own tasks need eval.utility.corpus_tasks=false)")
        int_option("eval.utility.data.mc_choices", u.data.get("mc_choices"), minimum=2)
        int_option("eval.utility.data.cloze_max_words", u.data.get("cloze_max_words"), minimum=1)
        int_option("eval.utility.data.seed", u.data.get("seed"), minimum=0)


# -- the corpus tasks' data ----------------------------------------------------------------


def _kind(question: str) -> str:
    """A question with its names blanked ("Who is the mayor of _?"): questions of one kind."""
    return re.sub(r"(?<=\s)[A-Z][\w'-]*", "_", question)


def mc_docs(qa: list[dict], n_choices: int, seed: int) -> list[dict]:
    """Each question with its answer and n_choices - 1 other answers, drawn from questions of the
    same kind where there are enough, else from all answers; the order is shuffled (seeded)."""
    rng = random.Random(seed)
    by_kind = defaultdict(set)
    for d in qa:
        by_kind[_kind(d["question"])].add(d["answer"])
    everything = sorted({d["answer"] for d in qa})
    docs = []
    for d in qa:
        pool = sorted(by_kind[_kind(d["question"])] - {d["answer"]})
        if len(pool) < n_choices - 1:
            pool = [a for a in everything if a != d["answer"]]
        if len(pool) < n_choices - 1:
            raise DataError(f"quail_retain_mc: {len(everything)} distinct retain answers, fewer than "
                            f"eval.utility.data.mc_choices={n_choices}")
        choices = rng.sample(pool, n_choices - 1) + [d["answer"]]
        rng.shuffle(choices)
        docs.append({"question": d["question"], "choices": choices, "label": choices.index(d["answer"])})
    return docs


def cloze_docs(texts: list[str], qa: list[dict], max_words: int) -> list[dict]:
    """For each retain answer stated in a retain article (not a QA sheet): up to max_words words of
    the article before it, and the answer. Answers no article states are left out."""
    articles = [t for t in texts if "\nAnswer:" not in t]
    docs = []
    for d in qa:
        for text in articles:
            at = text.find(" " + d["answer"])
            if at > 0:
                docs.append({"context": " ".join(text[:at].split()[-max_words:]), "answer": d["answer"]})
                break
    return docs


def write_corpus_tasks(out: Path, corpus, data) -> dict[str, int]:
    """The corpus tasks' data files in ``out``; returns the item count per task."""
    qa = corpus.knowmem.get("retain_qa") or []
    if not qa:
        raise DataError("the utility corpus tasks need knowmem/retain_qa, which the corpus lacks")
    texts = [t for split in ("retain1", "retain2") for t in corpus.raw.get(split, [])]
    docs = {"quail_retain_mc": mc_docs(qa, data.mc_choices, data.seed),
            "quail_retain_cloze": cloze_docs(texts, qa, data.cloze_max_words)}
    for task, rows in docs.items():
        if not rows:
            raise DataError(f"{task}: no items could be made from the corpus")
        (out / CORPUS_TASKS[task]).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {t: len(r) for t, r in docs.items()}


# -- running lm-eval ------------------------------------------------------------------------


def _flatten(task_results: dict) -> dict[str, Any]:
    """lm-eval's {"acc,none": v, "acc_stderr,none": s, "alias": ...} as {"acc": v, "acc_stderr": s};
    a filter other than "none" stays in the name (exact_match_remove_whitespace)."""
    out = {}
    for key, value in task_results.items():
        if "," not in key or isinstance(value, str):
            continue
        metric, filt = key.split(",", 1)
        out[metric if filt == "none" else f"{metric}_{filt}"] = None if value == "N/A" else float(value)
    return out


def run_utility(model, tokenizer, u, data_dir: Path | None) -> dict[str, dict[str, Any]]:
    """{task: {metric: value}} of lm-eval on ``model`` (in memory) for eval.utility ``u``;
    ``data_dir`` holds the corpus tasks' data when ``u.corpus_tasks``."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=u.batch_size)
    with tempfile.TemporaryDirectory(prefix="quail_lm_eval_") as tmp:
        if u.corpus_tasks:
            for task in u.tasks:
                spec = {"include": str(TASK_DIR / f"{task}.yaml"), "task": task,
                        "dataset_kwargs": {"data_files": {"test": str(Path(data_dir) / CORPUS_TASKS[task])}}}
                (Path(tmp) / f"{task}.yaml").write_text(yaml.safe_dump(spec))
            manager = TaskManager(include_path=tmp, include_defaults=False)
        else:
            manager = TaskManager()
        out = simple_evaluate(model=lm, tasks=list(u.tasks), num_fewshot=u.num_fewshot, limit=u.limit,
                              task_manager=manager, log_samples=False, bootstrap_iters=u.bootstrap_iters)
    return {task: _flatten(out["results"][task]) for task in u.tasks}
