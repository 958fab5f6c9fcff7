"""A small fictional corpus in the MUSE layout, generated from a seed.

Lets the whole pipeline run offline on a CPU with a few-million-parameter model trained
from scratch. Design choices come from the feasibility run (science.md section 4):

* Every entity (a town for ``news``, a character for ``books``) gets an invented,
  corpus-unique name and attribute values drawn independently from sizable pools, so the
  forget set's facts cannot be inferred from the retain set: a model retrained without
  the forget set really does not know them.
* Each entity's article/chapter (120-180 words) states all its facts, each sentence drawn
  from several templates, in shuffled order, with random filler detail (numbers, names,
  events) in between. A model that never saw the article cannot guess its continuation;
  with predictable templated prose VerbMem scored 75 for the retrained model.
* Each entity also gets a "QA sheet" document of several "Question: ...\\nAnswer: ...\\n\\n"
  pairs. A tiny model only learns to answer questions (and to profit from MUSE's 10
  in-context examples) when QA pairs appear in training as documents of several pairs.

The two styles share one engine (entities with attributes + sentence templates), this
module; a :class:`Style` only supplies word lists and templates (:mod:`quail_repro.data.styles`).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from quail_repro.data.muse import MUSE_LAYOUT
from quail_repro.data.names import Names
from quail_repro.data.styles import ALL_WORD_LISTS, STYLES, Style, person
from quail_repro.errors import ConfigError

ARTICLE_MIN_WORDS = 120
ARTICLE_MAX_WORDS = 180
FORMAT_VERSION = 1

# ------------------------------------------------------------------ the shared engine


def _detail(slot: str, rng: random.Random, names: Names, style: Style) -> str:
    """Random detail that carries no fact; fresh per sentence."""
    if slot == "num":
        return str(rng.randint(2, 60))
    if slot == "big":
        return f"{rng.randint(120, 9800):,}"
    if slot == "year2":
        return str(rng.randint(1890, 2023))
    if slot == "person":
        return person(rng, names, style.lists["first_names"])
    if slot == "place_name":
        return names.word((2, 3))
    if slot in style.lists:
        return rng.choice(style.lists[slot])
    raise KeyError(f"template slot {{{slot}}} has no filler in style {style.name!r}")


def _fill(template: str, rng: random.Random, names: Names, style: Style, known: dict[str, str]) -> str:
    values = {}
    for _, slot, _, _ in string.Formatter().parse(template):
        if slot and slot not in values:
            values[slot] = known[slot] if slot in known else _detail(slot, rng, names, style)
    text = template.format(**values)
    return text[0].upper() + text[1:]


@dataclass
class _Entity:
    name: str
    full: str
    split: str
    attrs: dict[str, str]
    article: str = ""
    qa: list[dict] = field(default_factory=list)

    def qa_sheet(self, rotation: int) -> str:
        """The QA pairs as one document; ``rotation`` starts it at another pair (repeated sheets)."""
        k = rotation % len(self.qa)
        return "".join(f"Question: {p['question']}\nAnswer: {p['answer']}\n\n" for p in self.qa[k:] + self.qa[:k])


def _make_entity(style: Style, rng: random.Random, names: Names, split: str, qa_per_entity: int) -> _Entity:
    name, full = style.make_name(rng, names)
    attrs: dict[str, str] = {}
    for attr in style.attributes:  # independent draws per entity: nothing shared across splits
        attrs[attr.key] = attr.make(rng, names, attrs)
    ent = _Entity(name=name, full=full, split=split, attrs=attrs)
    ent.article = _write_article(style, rng, names, ent)
    for attr in rng.sample(style.attributes, qa_per_entity):
        q = _fill(rng.choice(attr.questions), rng, names, style, {"n": name, "full": full, **attrs})
        # source: the document the fact is from (the cluster bootstrap resamples a town's questions together)
        ent.qa.append({"question": q, "answer": attrs[attr.key], "source": full})
    return ent


def _write_article(style: Style, rng: random.Random, names: Names, ent: _Entity) -> str:
    """Intro, then every fact in shuffled order with filler detail interleaved; 120-180 words."""
    known = {"n": ent.name, "full": ent.full, **ent.attrs}
    intro = _fill(rng.choice(style.intros), rng, names, style, known)
    facts = []
    for attr in style.attributes:
        facts.append(_fill(rng.choice(attr.statements), rng, names, style, {**known, "v": ent.attrs[attr.key]}))
    rng.shuffle(facts)
    sentences = [intro] + facts
    target = rng.randint(ARTICLE_MIN_WORDS + 20, ARTICLE_MAX_WORDS)
    n_words = sum(len(s.split()) for s in sentences)
    for _ in range(50):
        if n_words >= target:
            break
        filler = _fill(rng.choice(style.fillers), rng, names, style, known)
        if n_words + len(filler.split()) > ARTICLE_MAX_WORDS:
            if n_words >= ARTICLE_MIN_WORDS:
                break
            continue
        sentences.insert(rng.randint(1, len(sentences)), filler)  # never before the intro
        n_words += len(filler.split())
    if not ARTICLE_MIN_WORDS <= n_words <= ARTICLE_MAX_WORDS:  # templates too long/short: a bug here
        raise RuntimeError(f"article for {ent.name} has {n_words} words, outside the design range")
    return " ".join(sentences)


# ------------------------------------------------------------------ writing the corpus


@dataclass(frozen=True)
class GeneratedCorpus:
    """A mini corpus in memory: the records of every MUSE (subset, split)."""

    style: Style
    args: dict
    records: dict[tuple[str, str], list[dict]]
    entities: dict[str, list[str]]  # split -> entity names, in document order

    def texts(self, split: str) -> list[str]:
        """The raw documents of ``split``: per entity its article, then its QA sheet."""
        return [r["text"] for r in self.records["raw", split]]


def generate_mini_corpus(
    *,
    style: str,
    seed: int,
    n_forget: int,
    n_retain1: int,
    n_retain2: int,
    n_holdout: int,
    qa_per_entity: int,
    n_icl: int,
    verbmem_prompt_words: int,
    verbmem_gt_words: int,
    qa_repeat: int,
) -> GeneratedCorpus:
    """The corpus :func:`write_mini_corpus` writes, in memory. Same arguments, same records."""
    args = dict(style=style, seed=seed, n_forget=n_forget, n_retain1=n_retain1, n_retain2=n_retain2,
                n_holdout=n_holdout, qa_per_entity=qa_per_entity, n_icl=n_icl,
                verbmem_prompt_words=verbmem_prompt_words, verbmem_gt_words=verbmem_gt_words,
                qa_repeat=qa_repeat)
    st = _check_args(args)
    rng = random.Random(f"quail-mini-corpus:{style}:{seed}")  # private RNG; global state untouched
    reserved = _reserved_words()
    names = Names(rng, reserved)

    entities: dict[str, list[_Entity]] = {}
    for split, n in (("forget", n_forget), ("retain1", n_retain1), ("retain2", n_retain2), ("holdout", n_holdout)):
        entities[split] = [_make_entity(st, rng, names, split, qa_per_entity) for _ in range(n)]

    def docs(split):  # article, then its QA sheet qa_repeat times (each starting at another pair), entity by entity
        return [{"text": t} for e in entities[split]
                for t in (e.article, *(e.qa_sheet(k) for k in range(qa_repeat)))]

    icl_pool = [p for e in entities["retain1"] for p in e.qa]
    icl = rng.sample(icl_pool, 2 * n_icl)  # disjoint by construction
    data: dict[tuple[str, str], list[dict]] = {
        **{("raw", s): docs(s) for s in ("forget", "retain1", "retain2", "holdout")},
        ("verbmem", "forget"): [_verbmem_item(e.article, verbmem_prompt_words, verbmem_gt_words)
                                for e in entities["forget"]],
        ("knowmem", "forget_qa"): [p for e in entities["forget"] for p in e.qa],
        ("knowmem", "retain_qa"): [p for e in entities["retain2"] for p in e.qa],
        ("knowmem", "forget_qa_icl"): icl[:n_icl],
        ("knowmem", "retain_qa_icl"): icl[n_icl:],
        ("privleak", "forget"): [{"text": e.article} for e in entities["forget"]],
        ("privleak", "retain"): [{"text": e.article} for e in entities["retain2"]],
        ("privleak", "holdout"): [{"text": e.article} for e in entities["holdout"]],
    }
    assert set(data) == {(sub, sp) for sub, (sps, _) in MUSE_LAYOUT.items() for sp in sps}
    return GeneratedCorpus(style=st, args=args, records=data,
                           entities={split: [e.name for e in ents] for split, ents in entities.items()})


def write_mini_corpus(out_dir: str | Path, **args) -> Path:
    """Write :func:`generate_mini_corpus`'s corpus (same keyword arguments) in the MUSE
    layout; return the folder.

    Same arguments give byte-identical files. The folder holds one JSON Lines file per
    split (``raw/forget.jsonl`` ...), a README.md whose front matter declares the configs
    (so :func:`quail_repro.data.muse.load_muse` reads it through ``datasets``), and
    ``corpus.json`` (arguments, counts, entity names, content hash).
    """
    corpus = generate_mini_corpus(**args)
    st, args, data = corpus.style, corpus.args, corpus.records

    out = Path(out_dir)
    files: dict[str, bytes] = {}
    for (subset, split), records in data.items():
        files[f"{subset}/{split}.jsonl"] = "".join(
            json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records
        ).encode("utf-8")
    files["README.md"] = _readme(st, args, data).encode("utf-8")
    for rel, payload in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)

    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(files[rel]).digest())
    trained = [r["text"] for s in ("forget", "retain1", "retain2") for r in data["raw", s]]
    manifest = {
        "format_version": FORMAT_VERSION,
        "generator": "quail_repro.data.mini_corpus.write_mini_corpus",
        "dataset": st.dataset,
        "args": args,
        "counts": {f"{sub}/{sp}": len(recs) for (sub, sp), recs in data.items()},
        "words": {
            "trained": sum(len(t.split()) for t in trained),
            **{f"raw/{s}": sum(len(r["text"].split()) for r in data["raw", s])
               for s in ("forget", "retain1", "retain2", "holdout")},
        },
        "entities": corpus.entities,
        "privleak_retain_from": "retain2",
        "icl_from": "retain1",
        "sha256": digest.hexdigest(),
    }
    (out / "corpus.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def _reserved_words() -> set[str]:
    """Every word the templates and word lists use: an invented name must never equal one,
    or a forget entity's name could appear in retain text as an ordinary word."""
    texts = [w for lst in ALL_WORD_LISTS for w in lst]
    for st in STYLES.values():
        texts += [w for lst in st.lists.values() for w in lst] + list(st.intros) + list(st.fillers)
        texts += [t for a in st.attributes for t in a.statements + a.questions]
    return {w for t in texts for w in re.findall(r"[A-Za-z]+", t)}


def _check_args(args: dict) -> Style:
    if args["style"] not in STYLES:
        raise ConfigError(f"mini corpus: unknown style {args['style']!r}; valid choices: {sorted(STYLES)}")
    st = STYLES[args["style"]]
    if not isinstance(args["seed"], int):
        raise ConfigError(f"mini corpus: seed must be an integer, got {args['seed']!r}")
    for key in ("n_forget", "n_retain1", "n_retain2", "n_holdout", "qa_per_entity", "n_icl",
                "verbmem_prompt_words", "verbmem_gt_words", "qa_repeat"):
        if not isinstance(args[key], int) or args[key] < 1:  # an empty split is a DataError at load time
            raise ConfigError(f"mini corpus: {key} must be a positive integer, got {args[key]!r}")
    if args["qa_per_entity"] > len(st.attributes):
        raise ConfigError(
            f"mini corpus: qa_per_entity={args['qa_per_entity']} exceeds the {len(st.attributes)} facts "
            f"a {st.name!r} entity has"
        )
    if 2 * args["n_icl"] > args["n_retain1"] * args["qa_per_entity"]:
        raise ConfigError(
            f"mini corpus: n_icl={args['n_icl']} needs {2 * args['n_icl']} distinct retain1 QA pairs "
            f"(forget_qa_icl and retain_qa_icl are disjoint) but n_retain1*qa_per_entity="
            f"{args['n_retain1'] * args['qa_per_entity']}"
        )
    if args["verbmem_prompt_words"] + args["verbmem_gt_words"] > ARTICLE_MIN_WORDS:
        raise ConfigError(
            f"mini corpus: verbmem_prompt_words + verbmem_gt_words = "
            f"{args['verbmem_prompt_words'] + args['verbmem_gt_words']} exceeds the shortest article "
            f"({ARTICLE_MIN_WORDS} words)"
        )
    return st


def _verbmem_item(article: str, prompt_words: int, gt_words: int) -> dict:
    """Prompt = the first words of the article, gt = the words right after it.

    The prompt keeps no trailing space (a BPE tokenizer attaches the space to the next
    word), so ``prompt + " " + gt`` is a prefix of the article: articles are one
    paragraph with single spaces.
    """
    words = article.split(" ")
    return {"prompt": " ".join(words[:prompt_words]),
            "gt": " ".join(words[prompt_words:prompt_words + gt_words])}


def _readme(st: Style, args: dict, data: dict) -> str:
    lines = ["---", "configs:"]
    for subset, (splits, _) in MUSE_LAYOUT.items():
        lines += [f"- config_name: {subset}", "  data_files:"]
        for split in splits:
            lines += [f"  - split: {split}", f"    path: {subset}/{split}.jsonl"]
    lines += ["---", ""]
    arg_text = ", ".join(f"{k}={v}" for k, v in args.items())
    counts = "\n".join(f"- {sub}/{sp}: {len(r)} records" for (sub, sp), r in data.items())
    body = f"""# {st.dataset}: a fictional corpus in the MUSE layout

Generated by `quail_repro.data.mini_corpus.write_mini_corpus({arg_text})`.
Every {st.entity_kind} has an invented name and facts drawn at random, independently of
every other entity, so nothing about the forget entities can be inferred from the rest.

- raw/forget, raw/retain1, raw/retain2: what the target model is trained on. Per entity,
  one article (120-180 words, all its facts in varied prose with random detail) and
  {args['qa_repeat']} cop(ies) of its QA sheet ("Question: ...\\nAnswer: ...\\n\\n" pairs), each
  starting at another pair.
- raw/holdout: the same kinds of documents for entities no model is trained on.
- verbmem/forget: per forget article, its first {args['verbmem_prompt_words']} words (prompt)
  and the next {args['verbmem_gt_words']} words (gt); prompt + " " + gt opens the article.
- knowmem/forget_qa: the QA pairs of the forget entities. These are the very pairs that
  appear in their QA sheets in raw/forget: KnowMem here measures recall of trained facts,
  not inference from the articles. knowmem/retain_qa: the QA pairs of retain2 entities.
- knowmem/forget_qa_icl, knowmem/retain_qa_icl: {args['n_icl']} QA pairs each, from retain1
  entities (format demonstrations the model knows), disjoint from each other and from the
  evaluated pairs.
- privleak/forget: forget articles; privleak/retain: retain2 articles; privleak/holdout:
  holdout articles.

{counts}
"""
    return "\n".join(lines) + body
