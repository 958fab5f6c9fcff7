"""The classification task's data: labelled posts in train / val / test, and a forget set.

Three sources (conf/dataset): ``mini_tweets`` (generated here, data/mini_tweets.py),
``tweets_csv`` (local CSV or JSON files) and ``tweets_hub`` (a Hugging Face dataset by
name). Each maps its raw label values onto ``labels`` (the class names, in class-id order),
applies the forget selector (data/forget.py) to train, and writes the result as one cache
entry; ``load`` reads it back as a :class:`TweetCorpus`. Retain = train without forget.
Every predictable problem is a DataError naming the file, the column and the value.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from quail_repro.build import from_config
from quail_repro.cache import Cache, to_plain
from quail_repro.data.mini_tweets import generate_mini_tweets
from quail_repro.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
#: the methods' retain split is MUSE's name for the retain set unlearning regularises on
SPLIT_ALIASES = {"retain1": "retain"}


@dataclass
class TweetCorpus:
    """Posts as {"text", "label" (class id), "claim"?}; ``forget`` and ``poisoned`` index train."""
    source: str
    labels: list[str]
    splits: dict[str, list[dict]]
    forget: list[int]
    poisoned: dict[int, int]  # train index -> true label id, for posts whose label was flipped

    def split(self, name: str) -> list[dict]:
        """train / val / test, forget, retain (= retain1), or poison: the poisoned posts under
        their true labels."""
        name = SPLIT_ALIASES.get(name, name)
        train, forget = self.splits["train"], set(self.forget)
        if name == "forget":
            return [train[i] for i in self.forget]
        if name == "retain":
            return [p for i, p in enumerate(train) if i not in forget]
        if name == "poison":
            return [{**train[i], "label": true} for i, true in sorted(self.poisoned.items())]
        if name in self.splits:
            return self.splits[name]
        raise ConfigError(f"split {name!r} of {self.source}: choose one of forget, retain, poison, {', '.join(SPLITS)}")


def load_tweets(path: str | Path) -> TweetCorpus:
    d = json.loads((Path(path) / "corpus.json").read_text())
    return TweetCorpus(d["source"], d["labels"], d["splits"], d["forget"], {int(k): v for k, v in d["poisoned"].items()})


def map_labels(posts: list[dict], labels: list[str], label_map: dict, where: str, column: str) -> list[dict]:
    """Raw label values -> class ids: through ``label_map`` (raw value -> class name), or the
    class name itself. A value neither knows is a DataError naming it."""
    lookup = {str(k): v for k, v in label_map.items()}
    out = []
    for row, post in enumerate(posts):
        raw = post["label"]
        name = lookup.get(str(raw), raw)
        if name not in labels:
            known = sorted(set(lookup) | set(labels))
            raise DataError(f"{where}: column {column!r} row {row} has label value {raw!r}, which is neither a class "
                            f"({labels}) nor in dataset.label_map; known values: {known}")
        out.append({**post, "label": labels.index(name)})
    return out


class TweetSource:
    """What the three sources share: label mapping, forget selection, the cache entry."""

    def __init__(self, name: str, labels: list[str], label_map: dict, forget: dict):
        self.name, self.labels, self.label_map = name, list(labels), to_plain(label_map) or {}
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"dataset.labels={self.labels}: at least two distinct class names")
        self.forget_cfg = forget
        self.selector = from_config(forget)  # fails at config check for an unknown selector or bad setting
        self.privleak_auc_retrain = None  # PrivLeak is a MUSE metric: not measured here

    def raw_splits(self) -> tuple[dict[str, list[dict]], str]:
        """{split: [{"text", "label" (raw), ...}]} and what identifies their content."""
        raise NotImplementedError

    def where(self, split: str) -> tuple[str, str]:
        """(what to name in an error about ``split``, the label column's name there)."""
        return f"{self.name} {split}", "label"

    def spec(self) -> dict:
        return {"labels": self.labels, "label_map": self.label_map, "forget": to_plain(self.forget_cfg)}

    def prepare(self, cache: Cache) -> tuple[str, str]:
        raw, content = self.raw_splits()
        spec = {**self.spec(), "content": content}

        def build(d: Path):
            splits = {s: map_labels(raw[s], self.labels, self.label_map, *self.where(s)) for s in SPLITS}
            for s, posts in splits.items():
                if not posts:
                    raise DataError(f"{self.name}: split {s!r} is empty")
            forget, poisoned = self.selector.select(splits["train"], len(self.labels))
            if not forget:
                raise DataError(f"{self.name}: the forget selector {self.selector!r} selected no training post")
            for i, true in poisoned.items():
                splits["train"][i] = {**splits["train"][i], "label": (true + 1) % len(self.labels)}
            (d / "corpus.json").write_text(json.dumps({"source": self.name, "labels": self.labels, "splits": splits,
                                                       "forget": forget, "poisoned": poisoned}))

        entry = cache.get_or_build("tweets", spec, build, numeric=False)  # Python's random only
        return str(entry), entry.name

    load = staticmethod(load_tweets)


class MiniTweets(TweetSource):
    def __init__(self, name: str, labels: list[str], label_map: dict, forget: dict, generator: dict):
        super().__init__(name, labels, label_map, forget)
        self.generator = to_plain(generator)

    def raw_splits(self):
        return generate_mini_tweets(**self.generator), json.dumps(self.generator, sort_keys=True)


def _read_file(path: Path, text_column: str, label_column: str) -> list[dict]:
    """Rows of a .csv, .json (a list of objects) or .jsonl file as {"text", "label", other columns}."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    if path.suffix == ".csv":
        import csv
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    elif path.suffix in (".json", ".jsonl"):
        text = path.read_text(encoding="utf-8")
        rows = json.loads(text) if path.suffix == ".json" else [json.loads(x) for x in text.splitlines() if x.strip()]
    else:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; use .csv, .json or .jsonl")
    if not rows:
        raise DataError(f"{path}: the file has no rows")
    for column in (text_column, label_column):
        if column not in rows[0]:
            raise DataError(f"{path}: column {column!r} not found; the columns are {sorted(rows[0])}")
    return [{**{k: v for k, v in r.items() if k not in (text_column, label_column)},
             "text": r[text_column], "label": r[label_column]} for r in rows]


def split_rows(rows: list[dict], fractions: dict, seed: int) -> dict[str, list[dict]]:
    """One file's rows cut into train / val / test by ``fractions`` after a shuffle with ``seed``."""
    if set(fractions) != set(SPLITS) or abs(sum(fractions.values()) - 1) > 1e-9:
        raise ConfigError(f"dataset.split_fractions={fractions}: fractions for {SPLITS} summing to 1")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_train, n_val = int(len(rows) * fractions["train"]), int(len(rows) * fractions["val"])
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(rows))}
    return {s: [rows[i] for i in order[a:b]] for s, (a, b) in bounds.items()}


class TweetsFiles(TweetSource):
    """Local CSV / JSON / JSONL: ``files`` per split, or one ``file`` cut by ``split_fractions``."""

    def __init__(self, name: str, labels: list[str], label_map: dict, forget: dict, text_column: str,
                 label_column: str, files: dict | None, file: str | None, split_fractions: dict, split_seed: int):
        super().__init__(name, labels, label_map, forget)
        # checked when built (the config check, before any stage runs), not when the data is read
        if (files is None) == (file is None):
            raise ConfigError(f"dataset={name}: give either dataset.files (one per split: train, val, test) or "
                              "dataset.file (one file cut by dataset.split_fractions)")
        self.text_column, self.label_column = text_column, label_column
        self.files = {s: Path(p).expanduser() for s, p in to_plain(files).items()} if files is not None else None
        if self.files is not None and set(self.files) != set(SPLITS):
            raise ConfigError(f"dataset.files: one file per split {SPLITS}, got {sorted(self.files)}")
        self.file = Path(file).expanduser() if file is not None else None
        self.split_fractions, self.split_seed = to_plain(split_fractions), split_seed

    def spec(self) -> dict:
        return {**super().spec(), "text_column": self.text_column, "label_column": self.label_column,
                "split": None if self.file is None else [self.split_fractions, self.split_seed]}

    def raw_splits(self):
        paths = self.files or {"all": self.file}
        digest = hashlib.sha256()
        rows = {}
        for split, path in paths.items():
            rows[split] = _read_file(path, self.text_column, self.label_column)
            digest.update(path.read_bytes())
        if self.file is not None:
            rows = split_rows(rows["all"], self.split_fractions, self.split_seed)
        for split, posts in rows.items():
            if not posts:
                raise DataError(f"{paths.get(split, self.file)}: split {split!r} is empty")
            for i, p in enumerate(posts):
                if not isinstance(p["text"], str) or not p["text"].strip():
                    raise DataError(f"{paths.get(split, self.file)}: split {split!r} row {i}: column "
                                    f"{self.text_column!r} is empty ({p['text']!r})")
        return rows, digest.hexdigest()

    def where(self, split: str) -> tuple[str, str]:
        return f"{self.files[split] if self.files else f'{self.file} ({split} part)'}", self.label_column


class TweetsHub(TweetSource):
    """A Hugging Face dataset by name (offline by default: from the local cache unless QUAIL_ONLINE=1)."""

    def __init__(self, name: str, labels: list[str], label_map: dict, forget: dict, path: str, revision: str | None,
                 text_column: str, label_column: str, hub_splits: dict):
        super().__init__(name, labels, label_map, forget)
        if not path:  # checked when built: the config check fails before any stage runs
            raise ConfigError(f"dataset={name}: dataset.path (the Hugging Face dataset's name) is required")
        self.path, self.revision = path, revision
        self.text_column, self.label_column, self.hub_splits = text_column, label_column, to_plain(hub_splits)

    def raw_splits(self):
        import datasets
        rows = {}
        for split, hub_split in self.hub_splits.items():
            try:
                ds = datasets.load_dataset(self.path, split=hub_split, revision=self.revision)
            except Exception as err:  # offline without a cached copy, a wrong name or split
                raise DataError(f"{self.path} split {hub_split!r}: {type(err).__name__}: {err}") from err
            for column in (self.text_column, self.label_column):
                if column not in ds.column_names:
                    raise DataError(f"{self.path} split {hub_split!r}: column {column!r} not found; the columns are "
                                    f"{ds.column_names}")
            rows[split] = [{"text": t, "label": y} for t, y in zip(ds[self.text_column], ds[self.label_column])]
        return rows, f"{self.path}@{self.revision}"

    def where(self, split: str) -> tuple[str, str]:
        return f"{self.path} split {self.hub_splits[split]!r}", self.label_column
