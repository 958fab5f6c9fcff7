"""Where a MUSE-layout corpus comes from: generated here, or a hub id / local folder.

Both return a path that ``load_muse`` reads with the same call, and a key that
identifies the content for downstream cache keys.
"""
from __future__ import annotations

from pathlib import Path

from quail_repro.cache import Cache, to_plain
from quail_repro.data.mini_corpus import write_mini_corpus


class MiniCorpus:
    """The embedded corpus, generated deterministically from its settings."""

    def __init__(self, name: str, generator: dict, privleak_auc_retrain: float | None):
        self.name = name
        self.generator = to_plain(generator)
        self.privleak_auc_retrain = privleak_auc_retrain

    def prepare(self, cache: Cache) -> tuple[str, str]:
        entry = cache.get_or_build("corpus", self.generator,
                                   lambda d: write_mini_corpus(d, **self.generator))
        return str(entry), entry.name


class MuseSource:
    """Real MUSE data (hub id such as muse-bench/MUSE-News) or a local copy of its layout."""

    def __init__(self, name: str, path: str, privleak_auc_retrain: float | None):
        self.name, self.path = name, path
        self.privleak_auc_retrain = privleak_auc_retrain

    def prepare(self, cache: Cache) -> tuple[str, str]:
        local = Path(self.path).expanduser()
        return (str(local.resolve()) if local.exists() else self.path), self.path
