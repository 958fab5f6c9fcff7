"""eval.utility: lm-eval tasks (here the corpus tasks, offline) on the evaluated model at every
precision, through HFLM around the model already loaded, in results.json and as table columns."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from quail_repro import stages
from quail_repro.errors import ConfigError
from quail_repro.eval.utility import cloze_docs, mc_docs
from quail_repro.pipeline import run
from quail_repro.results import Results, read_results

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


def cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("choice, tasks", [("none", []), ("embedded", ["quail_retain_mc", "quail_retain_cloze"]),
                                           ("zhang2025", ["mmlu", "truthfulqa_mc2", "triviaqa"])])
def test_the_utility_configs_compose(choice, tasks):
    assert list(cfg("+experiment=table3", f"eval/utility={choice}").eval.utility.tasks) == tasks
    assert cfg().eval.utility.tasks == []  # off by default


@pytest.mark.parametrize("override, option", [("eval.utility.tasks=[mmlu]", "corpus tasks"),
                                              ("eval.utility.batch_size=0", "batch_size"),
                                              ("eval.utility.data.mc_choices=1", "mc_choices")])
def test_a_bad_utility_setting_fails_before_any_stage(tmp_path, override, option):
    with pytest.raises(ConfigError, match=option):
        run(cfg("+experiment=toy", "device=cpu", "logger=none", f"paths.cache={tmp_path}", "eval/utility=embedded",
                override), tmp_path / "run")


def test_multiple_choice_draws_distractors_from_questions_of_the_same_kind():
    qa = [{"question": f"Who is the mayor of {t}?", "answer": f"Mayor{i}"} for i, t in enumerate(["Aa", "Bb", "Cc"])]
    qa += [{"question": f"When was {t} founded?", "answer": str(1700 + i)} for i, t in enumerate(["Aa", "Bb", "Cc"])]
    docs = mc_docs(qa, n_choices=3, seed=0)
    for d, q in zip(docs, qa):
        assert d["choices"][d["label"]] == q["answer"] and len(set(d["choices"])) == 3
        kind = "Mayor" if q["answer"].startswith("Mayor") else "17"
        assert all(c.startswith(kind) for c in d["choices"])
    assert docs == mc_docs(qa, n_choices=3, seed=0)


def test_cloze_cuts_each_article_before_its_answer_and_skips_qa_sheets():
    texts = ["Question: Who is the mayor of Aa?\nAnswer: Ewan Dal", "In Aa the river is wide. The mayor of Aa is Ewan Dal, since May."]
    docs = cloze_docs(texts, [{"question": "Who is the mayor of Aa?", "answer": "Ewan Dal"},
                              {"question": "What is sold?", "answer": "tin"}], max_words=5)
    assert docs == [{"context": "The mayor of Aa is", "answer": "Ewan Dal"}]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("utility")
    # this process's thread count: the runs below reuse the sweep's entries only in the same numeric
    # environment (numerics.py), as another thread count computes other bits
    env = dict(os.environ, QUAIL_CACHE_DIR=str(tmp / "cache"), OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc = subprocess.run([sys.executable, "-m", "quail_repro", "+experiment=[table3,toy]", "device=cpu", "logger=none",
                           "method=target,ga", "quant=[none,rtn_int4]", "eval/utility=embedded",
                           f"hydra.sweep.dir={tmp / 'sweep'}"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp / "cache", tmp / "sweep"


def test_results_hold_utility_per_precision_and_task(sweep):
    _, folder = sweep
    for job in ("0_target", "1_ga"):
        res = read_results(folder / job / "results.json")
        assert list(res.utility) == ["none", "rtn_int4"]
        for scores in res.utility.values():
            assert set(scores) == {"quail_retain_mc", "quail_retain_cloze"}
            assert 0 <= scores["quail_retain_mc"]["acc"] <= 1 and 0 <= scores["quail_retain_cloze"]["acc"] <= 1
            assert scores["quail_retain_cloze"]["perplexity"] > 1
    assert Results.from_dict({"model": "m", "dataset": "d", "method": "ga", "seed": 0}).utility == {}  # older files


def test_table3_shows_utility_columns(sweep):
    _, folder = sweep
    header = next(csv.reader((folder / "table3.csv").open()))
    for col in ("full quail_retain_mc acc", "4-bit quail_retain_mc acc", "4-bit quail_retain_cloze perplexity"):
        assert any(h.startswith(col) for h in header), (col, header)
    assert "quail_retain_cloze acc" in (folder / "table3.md").read_text()


def test_utility_reuses_the_loaded_model_and_leaves_the_muse_cache_keys_alone(sweep, tmp_path, monkeypatch):
    cache, _ = sweep
    base = ["+experiment=[table3,toy]", "device=cpu", "logger=none", f"paths.cache={cache}", "method=target"]
    evals = sorted(p.name for p in (cache / "eval").iterdir())
    run(cfg(*base, "quant=[none,rtn_int4]"), tmp_path / "off")  # utility off: MUSE's entries are the same
    assert sorted(p.name for p in (cache / "eval").iterdir()) == evals
    loads = []
    real = stages.load
    monkeypatch.setattr(stages, "load", lambda ref, *a, **k: loads.append(ref.key) or real(ref, *a, **k))
    res = run(cfg(*base, "quant=[rtn_int8]", "eval/utility=embedded"), tmp_path / "on").to_dict()
    assert set(res["utility"]["rtn_int8"]) == {"quail_retain_mc", "quail_retain_cloze"}
    assert len([k for k in loads if k.startswith("target-")]) == 1  # one load for MUSE's metrics and lm-eval
