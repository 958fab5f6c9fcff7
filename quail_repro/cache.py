"""Stage outputs cached on disk by a hash of the config that made them.

An entry is built in a private temporary folder and renamed into place, so a
reader never sees half an entry; a per-entry file lock makes a second job that
wants the same entry wait for the first instead of computing it again.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

#: bump when a code change makes old cache entries wrong or changes how keys are made
#: (2: nested config nodes are resolved before hashing; ``${seed}`` was hashed as that string)
CACHE_VERSION = 2
COMPLETE = ".complete"
SPEC = "spec.json"


def to_plain(obj: Any) -> Any:
    """Plain JSON-able values, every config node (at any depth) resolved: an unresolved
    ``${seed}`` must never stand in a key for the seed it names."""
    if isinstance(obj, (DictConfig, ListConfig)):
        return OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def config_hash(spec: Any) -> str:
    """Stable short hash of a JSON-able spec (dict order does not matter; a value JSON
    cannot hold is a TypeError, not a silent str())."""
    text = json.dumps(to_plain(spec), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Cache:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def key(self, stage: str, spec: Any) -> str:
        return f"{stage}-{config_hash({'cache_version': CACHE_VERSION, 'stage': stage, 'spec': to_plain(spec)})}"

    def path(self, stage: str, spec: Any) -> Path:
        return self.root / stage / self.key(stage, spec)

    def lookup(self, stage: str, spec: Any) -> Path | None:
        entry = self.path(stage, spec)
        return entry if (entry / COMPLETE).exists() else None

    def get_or_build(self, stage: str, spec: Any, build: Callable[[Path], None]) -> Path:
        """Return the entry for ``spec``, calling ``build(tmp_dir)`` once if it is missing."""
        entry = self.path(stage, spec)
        if (entry / COMPLETE).exists():
            log.info("cache hit: %s", entry)
            return entry
        with _file_lock(entry.with_name(entry.name + ".lock")):
            if (entry / COMPLETE).exists():  # another job built it while we waited
                # the pid tells which process waited (a launcher's jobs are separate processes)
                log.info("cache hit after wait (pid %d): %s", os.getpid(), entry)
                return entry
            tmp = entry.with_name(f".tmp-{entry.name}-{uuid.uuid4().hex[:8]}")
            tmp.mkdir(parents=True)
            try:
                build(tmp)
                (tmp / SPEC).write_text(json.dumps(to_plain(spec), indent=2, sort_keys=True))
                (tmp / COMPLETE).touch()
                if entry.exists():  # leftover of a crashed build without the marker
                    shutil.rmtree(entry)
                os.rename(tmp, entry)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        log.info("cache write (pid %d): %s", os.getpid(), entry)
        return entry
