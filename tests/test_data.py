"""Data stage: the mini-corpus generator and the MUSE loader (local folders, offline)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from quail_repro.data.mini_corpus import ARTICLE_MAX_WORDS, ARTICLE_MIN_WORDS, STYLES, write_mini_corpus
from quail_repro.data.muse import MUSE_LAYOUT, MuseCorpus, load_muse
from quail_repro.errors import ConfigError, DataError

DEFAULTS = dict(seed=0, n_forget=32, n_retain1=64, n_retain2=32, n_holdout=32, qa_per_entity=4, n_icl=10,
                verbmem_prompt_words=40, verbmem_gt_words=40, qa_repeat=1)
# deliberately unequal sizes, so a count assertion can tell the splits apart
SMALL = dict(seed=3, n_forget=3, n_retain1=5, n_retain2=4, n_holdout=6, qa_per_entity=3, n_icl=2,
             verbmem_prompt_words=12, verbmem_gt_words=17, qa_repeat=1)


@pytest.fixture(autouse=True)
def hf_offline(tmp_path, monkeypatch):
    """Keep every datasets/hub file under tmp and never touch the network.

    datasets reads these variables at import; if another test imported it first, its
    module-level constants are patched as well.
    """
    home = tmp_path / "hf_home"
    for var, value in {"HF_HOME": home, "HF_DATASETS_CACHE": home / "datasets", "HF_HUB_OFFLINE": "1",
                       "HF_DATASETS_OFFLINE": "1"}.items():
        monkeypatch.setenv(var, str(value))
    if "datasets" in sys.modules:
        import datasets

        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
    if "huggingface_hub" in sys.modules:
        import huggingface_hub.constants

        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return home


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _write(tmp_path: Path, style: str = "news", name: str = "corpus", **overrides) -> Path:
    return write_mini_corpus(tmp_path / name, style=style, **{**SMALL, **overrides})


def _split(folder: Path, subset: str, split: str) -> list[dict]:
    return _read_jsonl(folder / subset / f"{split}.jsonl")


def _has_word(name: str, text: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\b", text) is not None


# ----------------------------------------------------------------------------- generator


@pytest.mark.parametrize("style", sorted(STYLES))
def test_same_arguments_give_byte_identical_files(tmp_path, style):
    a = _write(tmp_path, style, "a")
    b = _write(tmp_path, style, "b")
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 14  # 12 splits + README.md + corpus.json
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.mark.parametrize("style", sorted(STYLES))
def test_different_seeds_give_different_corpora(tmp_path, style):
    a = _write(tmp_path, style, "a", seed=1)
    b = _write(tmp_path, style, "b", seed=2)
    assert (a / "raw/forget.jsonl").read_bytes() != (b / "raw/forget.jsonl").read_bytes()
    man_a, man_b = (json.loads((d / "corpus.json").read_text()) for d in (a, b))
    assert man_a["sha256"] != man_b["sha256"]
    assert not set(man_a["entities"]["forget"]) & set(man_b["entities"]["forget"])


def test_generator_leaves_global_random_state_alone(tmp_path):
    import random

    state = random.getstate()
    _write(tmp_path)
    assert random.getstate() == state


def test_layout_and_counts(tmp_path):
    folder = _write(tmp_path)
    s = SMALL
    expected = {
        ("raw", "forget"): 2 * s["n_forget"],  # article + QA sheet per entity
        ("raw", "retain1"): 2 * s["n_retain1"],
        ("raw", "retain2"): 2 * s["n_retain2"],
        ("raw", "holdout"): 2 * s["n_holdout"],
        ("verbmem", "forget"): s["n_forget"],
        ("knowmem", "forget_qa"): s["n_forget"] * s["qa_per_entity"],
        ("knowmem", "retain_qa"): s["n_retain2"] * s["qa_per_entity"],
        ("knowmem", "forget_qa_icl"): s["n_icl"],
        ("knowmem", "retain_qa_icl"): s["n_icl"],
        ("privleak", "forget"): s["n_forget"],
        ("privleak", "retain"): s["n_retain2"],
        ("privleak", "holdout"): s["n_holdout"],
    }
    assert set(expected) == {(sub, sp) for sub, (sps, _) in MUSE_LAYOUT.items() for sp in sps}
    for (subset, split), n in expected.items():
        assert len(_split(folder, subset, split)) == n, (subset, split)
    manifest = json.loads((folder / "corpus.json").read_text())
    assert manifest["counts"] == {f"{sub}/{sp}": n for (sub, sp), n in expected.items()}
    assert manifest["args"] == {"style": "news", **SMALL}
    assert manifest["dataset"] == "mini_news"
    assert [len(manifest["entities"][k]) for k in ("forget", "retain1", "retain2", "holdout")] == [3, 5, 4, 6]
    readme = (folder / "README.md").read_text()
    assert readme.startswith("---\nconfigs:\n")
    for subset, (splits, _) in MUSE_LAYOUT.items():
        assert f"- config_name: {subset}\n" in readme
        for split in splits:
            assert f"  - split: {split}\n    path: {subset}/{split}.jsonl\n" in readme


@pytest.mark.parametrize("style", sorted(STYLES))
def test_required_fields_articles_and_qa_sheets(tmp_path, style):
    folder = write_mini_corpus(tmp_path / "c", style=style, **DEFAULTS)
    for subset, (splits, fields) in MUSE_LAYOUT.items():
        for split in splits:
            for rec in _split(folder, subset, split):
                # a question also names its source document (its town), for the cluster bootstrap
                extra = {"source"} if subset == "knowmem" else set()
                assert set(rec) == set(fields) | extra, (subset, split)
                assert all(isinstance(rec[f], str) and rec[f].strip() for f in fields), (subset, split, rec)
    for subset, split in [("knowmem", s) for s in MUSE_LAYOUT["knowmem"][0]]:
        for pair in _split(folder, subset, split):
            assert 1 <= len(pair["answer"].split()) <= 4, pair
            assert pair["question"].endswith("?") and "\n" not in pair["question"] + pair["answer"]
    qa_doc = re.compile(r"(Question: [^\n]+\nAnswer: [^\n]+\n\n){%d}" % DEFAULTS["qa_per_entity"])
    articles = [r["text"] for r in _split(folder, "raw", "forget")][0::2]
    sheets = [r["text"] for r in _split(folder, "raw", "forget")][1::2]
    assert all(qa_doc.fullmatch(s) for s in sheets)
    for article in articles + [r["text"] for r in _split(folder, "privleak", "holdout")]:
        assert ARTICLE_MIN_WORDS <= len(article.split()) <= ARTICLE_MAX_WORDS
        assert "\n" not in article and "  " not in article
    manifest = json.loads((folder / "corpus.json").read_text())
    trained = sum(len(r["text"].split()) for s in ("forget", "retain1", "retain2") for r in _split(folder, "raw", s))
    assert manifest["words"]["trained"] == trained
    assert 24_000 <= trained <= 45_000  # corpus must stay small for a CPU run (see README/report)


@pytest.mark.parametrize("style", sorted(STYLES))
def test_verbmem_is_a_contiguous_span_of_its_forget_article(tmp_path, style):
    folder = _write(tmp_path, style)
    articles = [r["text"] for r in _split(folder, "privleak", "forget")]
    trained = {r["text"] for r in _split(folder, "raw", "forget")}
    items = _split(folder, "verbmem", "forget")
    assert len(items) == len(articles)
    for item, article in zip(items, articles):
        assert article in trained
        assert len(item["prompt"].split()) == SMALL["verbmem_prompt_words"]
        assert len(item["gt"].split()) == SMALL["verbmem_gt_words"]
        assert article.startswith(item["prompt"] + " " + item["gt"])


@pytest.mark.parametrize("style", sorted(STYLES))
def test_forget_facts_are_in_forget_articles_and_nowhere_in_retain(tmp_path, style):
    folder = write_mini_corpus(tmp_path / "c", style=style, **DEFAULTS)
    manifest = json.loads((folder / "corpus.json").read_text())
    forget_names = manifest["entities"]["forget"]
    articles = [r["text"] for r in _split(folder, "privleak", "forget")]
    forget_docs = "".join(r["text"] for r in _split(folder, "raw", "forget"))
    pairs = _split(folder, "knowmem", "forget_qa")
    assert len(pairs) == len(forget_names) * DEFAULTS["qa_per_entity"]
    for pair in pairs:
        owners = [i for i, n in enumerate(forget_names) if _has_word(n, pair["question"])]
        assert len(owners) == 1, pair
        assert pair["answer"] in articles[owners[0]], (pair, forget_names[owners[0]])
        # recall of trained facts: the very pair is in a QA sheet of raw/forget
        assert f"Question: {pair['question']}\nAnswer: {pair['answer']}\n\n" in forget_docs
    other_texts = [r["text"] for s in ("retain1", "retain2", "holdout") for r in _split(folder, "raw", s)]
    other_texts += [r["text"] for s in ("retain", "holdout") for r in _split(folder, "privleak", s)]
    other_texts += [p["question"] + " " + p["answer"] for s in ("retain_qa", "forget_qa_icl", "retain_qa_icl")
                    for p in _split(folder, "knowmem", s)]
    blob = "\n".join(other_texts)
    leaked = [n for n in forget_names if _has_word(n, blob)]
    assert leaked == []
    all_names = [n for ents in manifest["entities"].values() for n in ents]
    assert len(set(all_names)) == len(all_names)


def test_icl_pairs_are_retain1_and_disjoint(tmp_path):
    folder = write_mini_corpus(tmp_path / "c", style="books", **DEFAULTS)
    key = lambda p: (p["question"], p["answer"])  # noqa: E731
    icl_f = {key(p) for p in _split(folder, "knowmem", "forget_qa_icl")}
    icl_r = {key(p) for p in _split(folder, "knowmem", "retain_qa_icl")}
    evaluated = {key(p) for s in ("forget_qa", "retain_qa") for p in _split(folder, "knowmem", s)}
    assert len(icl_f) == len(icl_r) == DEFAULTS["n_icl"]
    assert not icl_f & icl_r and not (icl_f | icl_r) & evaluated
    retain1 = "".join(r["text"] for r in _split(folder, "raw", "retain1"))
    for q, a in icl_f | icl_r:
        assert f"Question: {q}\nAnswer: {a}\n\n" in retain1


def test_privleak_retain_is_retain2_articles(tmp_path):
    folder = _write(tmp_path)
    assert [r["text"] for r in _split(folder, "privleak", "retain")] == [r["text"] for r in _split(folder, "raw", "retain2")][0::2]
    assert [r["text"] for r in _split(folder, "privleak", "holdout")] == [r["text"] for r in _split(folder, "raw", "holdout")][0::2]


def test_unknown_style_names_the_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"'poems'.*\['books', 'news'\]"):
        _write(tmp_path, "poems")


@pytest.mark.parametrize("override, option", [
    ({"n_forget": 0}, "n_forget"),
    ({"qa_per_entity": 99}, "qa_per_entity"),
    ({"n_icl": 8}, "n_icl"),  # 16 disjoint ICL pairs from 5 retain1 entities x 3 pairs
    ({"verbmem_prompt_words": 100, "verbmem_gt_words": 40}, "verbmem_prompt_words"),
])
def test_bad_generator_arguments_name_the_option(tmp_path, override, option):
    with pytest.raises(ConfigError, match=option):
        _write(tmp_path, **override)


# ----------------------------------------------------------------------------- loader


@pytest.mark.parametrize("style", sorted(STYLES))
def test_round_trip_through_load_muse(tmp_path, style):
    folder = _write(tmp_path, style)
    corpus = load_muse(str(folder))
    assert isinstance(corpus, MuseCorpus) and corpus.source == str(folder)
    assert corpus.raw == {s: [r["text"] for r in _split(folder, "raw", s)] for s in MUSE_LAYOUT["raw"][0]}
    assert corpus.verbmem == _split(folder, "verbmem", "forget")
    assert corpus.knowmem == {s: _split(folder, "knowmem", s) for s in MUSE_LAYOUT["knowmem"][0]}
    assert corpus.privleak == {s: [r["text"] for r in _split(folder, "privleak", s)] for s in MUSE_LAYOUT["privleak"][0]}
    small = load_muse(folder, max_items=2)
    assert small.raw["holdout"] == corpus.raw["holdout"][:2] and len(small.verbmem) == 2
    assert all(len(v) == 2 for v in small.knowmem.values())


def test_regenerated_folder_is_not_read_from_a_stale_cache(tmp_path):
    # datasets keys a manual-config folder's cache on its name and README only
    first = load_muse(_write(tmp_path, name="same", seed=1))
    second = load_muse(_write(tmp_path, name="same", seed=2))
    assert first.raw["forget"] != second.raw["forget"]
    assert second.raw["forget"] == [r["text"] for r in _split(tmp_path / "same", "raw", "forget")]


def test_load_muse_leaves_hf_home_untouched(tmp_path, hf_offline):
    load_muse(_write(tmp_path))
    assert not list(hf_offline.rglob("*.arrow"))


def _drop_config(folder: Path, subset: str):
    readme = folder / "README.md"
    text = readme.read_text()
    start = text.index(f"- config_name: {subset}\n")
    end = text.find("- config_name:", start + 1)
    end = text.index("---", start) if end == -1 else end
    readme.write_text(text[:start] + text[end:])


def _corrupt_line(path: Path, lineno: int, new: str):
    lines = path.read_text().splitlines(keepends=True)
    lines[lineno - 1] = new
    path.write_text("".join(lines))


# each case: mutate a valid corpus, then the DataError message must contain these pieces
# ("{dir}" stands for the corpus folder)
ERROR_CASES = {
    "missing_readme": (lambda d: (d / "README.md").unlink(), ["{dir}/README.md"]),
    "readme_without_configs": (lambda d: (d / "README.md").write_text("# no front matter\n"), ["README.md", "configs"]),
    "undeclared_subset": (lambda d: _drop_config(d, "knowmem"), ["'knowmem'", "{dir}/README.md", "forget_qa"]),
    "missing_split_file": (lambda d: (d / "knowmem/retain_qa.jsonl").unlink(),
                           ["'knowmem'", "'retain_qa'", "{dir}/knowmem/retain_qa.jsonl"]),
    "malformed_json_line": (lambda d: _corrupt_line(d / "raw/retain2.jsonl", 3, '{"text": "cut off\n'),
                            ["'raw'", "'retain2'", "{dir}/raw/retain2.jsonl", "line 3 is not valid JSON"]),
    "record_lacks_field": (lambda d: _corrupt_line(d / "verbmem/forget.jsonl", 2, '{"prompt": "only a prompt"}\n'),
                           ["'verbmem'", "'forget'", "{dir}/verbmem/forget.jsonl", "line 2", "'gt'"]),
    "field_missing_everywhere": (lambda d: (d / "knowmem/forget_qa_icl.jsonl").write_text('{"question": "q?"}\n'),
                                 ["'knowmem'", "'forget_qa_icl'", "{dir}/knowmem/forget_qa_icl.jsonl", "'answer'"]),
    "field_not_a_string": (lambda d: (d / "privleak/retain.jsonl").write_text('{"text": ["a", "list"]}\n'),
                           ["'privleak'", "'retain'", "{dir}/privleak/retain.jsonl", "'text'"]),
    "empty_split": (lambda d: (d / "privleak/holdout.jsonl").write_text(""),
                    ["'privleak'", "'holdout'", "{dir}/privleak/holdout.jsonl"]),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_broken_local_corpus_raises_a_data_error_naming_the_place(tmp_path, case):
    folder = _write(tmp_path)
    mutate, pieces = ERROR_CASES[case]
    mutate(folder)
    with pytest.raises(DataError) as info:
        load_muse(str(folder))
    message = str(info.value)
    assert str(folder) in message
    for piece in pieces:
        assert piece.format(dir=folder) in message, (piece, message)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nope"))):
        load_muse(str(tmp_path / "nope"))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        load_muse(str(tmp_path / "afile"))


def test_unreachable_hub_id_is_a_data_error(tmp_path):
    # offline (fixture): a hub id that is not cached fails inside datasets; the message
    # must still name the source and the split, and keep the library's reason
    with pytest.raises(DataError, match=r"(?i)'quail-no-such-org/no-such-dataset', subset 'raw', split 'forget'.*offline"):
        load_muse("quail-no-such-org/no-such-dataset")


def test_qa_repeat_adds_rotated_copies_of_each_qa_sheet(tmp_path):
    from quail_repro.data.mini_corpus import generate_mini_corpus

    once = generate_mini_corpus(style="news", **SMALL).texts("forget")
    thrice = generate_mini_corpus(style="news", **{**SMALL, "qa_repeat": 3}).texts("forget")
    assert len(thrice) == 2 * len(once)  # per entity: article + 3 sheets instead of article + 1 sheet
    article, sheet = once[0], once[1]
    pairs = [p for p in sheet.split("\n\n") if p]
    assert thrice[0] == article and thrice[1] == sheet
    assert [p for p in thrice[2].split("\n\n") if p] == pairs[1:] + pairs[:1]  # starts at the next pair
    assert [p for p in thrice[3].split("\n\n") if p] == pairs[2:] + pairs[:2]
