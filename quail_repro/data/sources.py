"""Where a MUSE-layout corpus comes from: generated here, or a hub id / local folder.

Both return a path that ``load_muse`` reads with the same call, and a key that
identifies the content for downstream cache keys.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from quail_repro.cache import Cache, to_plain
from quail_repro.data.mini_corpus import write_mini_corpus
from quail_repro.data.muse import MuseCorpus, load_muse
from quail_repro.errors import ConfigError, DataError


class MiniCorpus:
    """The embedded corpus, generated deterministically from its settings."""

    def __init__(self, name: str, generator: dict, privleak_auc_retrain: float | None):
        self.name = name
        self.generator = to_plain(generator)
        self.privleak_auc_retrain = privleak_auc_retrain

    def prepare(self, cache: Cache) -> tuple[str, str]:
        entry = cache.get_or_build("corpus", self.generator,
                                   lambda d: write_mini_corpus(d, **self.generator), numeric=False)
        return str(entry), entry.name


class MuseSource:
    """Real MUSE data (hub id such as muse-bench/MUSE-News) or a local copy of its layout."""

    def __init__(self, name: str, path: str, privleak_auc_retrain: float | None):
        self.name, self.path = name, path
        self.privleak_auc_retrain = privleak_auc_retrain

    def prepare(self, cache: Cache) -> tuple[str, str]:
        local = Path(self.path).expanduser()
        return (str(local.resolve()) if local.exists() else self.path), self.path


#: the MUSE subsets a local folder may lack: their metrics are skipped (raw is what the models train on)
OPTIONAL_SUBSETS = ("verbmem", "knowmem", "privleak")


class MuseDir:
    """A local folder in MUSE's layout (``dataset=muse_dir dataset.path=DIR``), keyed by its content.

    verbmem, knowmem and privleak may be missing in part or whole; raw may not.
    """

    def __init__(self, name: str, path: str, privleak_auc_retrain: float | None):
        if not path:  # checked when built: the config check fails before any stage runs
            raise ConfigError(f"dataset={name} needs dataset.path=DIR, a local folder in MUSE's layout")
        self.name, self.path = name, path
        self.privleak_auc_retrain = privleak_auc_retrain

    def prepare(self, cache: Cache) -> tuple[str, str]:
        folder = Path(self.path).expanduser()
        if not folder.is_dir():
            raise DataError(f"dataset.path={self.path!r}: no such folder (dataset=muse_dir reads a local MUSE-layout folder)")
        # the content, not the path, identifies the data: an edited file must not reuse old models
        digest = hashlib.sha256()
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(str(f.relative_to(folder)).encode() + b"\0" + f.read_bytes() + b"\0")
        return str(folder.resolve()), f"muse_dir-{digest.hexdigest()[:16]}"

    def load(self, path: str) -> MuseCorpus:
        return load_muse(path, optional=OPTIONAL_SUBSETS)
