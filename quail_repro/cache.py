"""Stage outputs cached on disk by a hash of the config that made them, and of the numeric
environment that computed them (numerics.environment: a stage that computes numbers on another
kernel level, BLAS path, thread count or GPU gives other bits, so it gets another entry).

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
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

#: bump when a code change makes old cache entries wrong or changes how keys are made
#: (2: nested config nodes are resolved before hashing; ``${seed}`` was hashed as that string;
#: 3: numeric entries keyed by the numeric environment instead of the device kind alone)
CACHE_VERSION = 3
COMPLETE = ".complete"
SPEC = "spec.json"
#: who built an entry, where and when (read back into results.json's provenance)
PROVENANCE = "provenance.json"


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
    """``environment`` (numerics.environment) goes into the key of every entry built with
    ``numeric=True``; entries that hold no computed number (a generated corpus, a tokenizer) pass
    ``numeric=False`` and are shared by every machine. ``provenance`` is what a built entry records
    about its maker (machine.describe()); ``used`` collects, per entry this object handed out, the
    provenance it was built with."""

    def __init__(self, root: str | Path, environment: dict | None = None, provenance: dict | None = None):
        self.root = Path(root).resolve()
        self.environment, self.provenance = environment or {}, provenance or {}
        self.used: dict[str, dict] = {}

    def key(self, stage: str, spec: Any, numeric: bool = True) -> str:
        content = {'cache_version': CACHE_VERSION, 'stage': stage, 'spec': to_plain(spec)}
        if numeric and self.environment:
            content["environment"] = self.environment
        return f"{stage}-{config_hash(content)}"

    def path(self, stage: str, spec: Any, numeric: bool = True) -> Path:
        return self.root / stage / self.key(stage, spec, numeric)

    def lookup(self, stage: str, spec: Any, numeric: bool = True) -> Path | None:
        entry = self.path(stage, spec, numeric)
        return entry if (entry / COMPLETE).exists() else None

    def _hit(self, entry: Path) -> Path:
        prov = entry / PROVENANCE
        made = json.loads(prov.read_text()) if prov.exists() else {}  # entries older than provenance have none
        self.used[entry.name] = {k: made.get(k, "unknown") for k in ("built_by", "built_at", "build_seconds")}
        return entry

    def get_or_build(self, stage: str, spec: Any, build: Callable[[Path], None], numeric: bool = True) -> Path:
        """Return the entry for ``spec``, calling ``build(tmp_dir)`` once if it is missing."""
        entry = self.path(stage, spec, numeric)
        if (entry / COMPLETE).exists():
            log.info("cache hit: %s", entry)
            return self._hit(entry)
        with _file_lock(entry.with_name(entry.name + ".lock")):
            if (entry / COMPLETE).exists():  # another job built it while we waited
                # the pid tells which process waited (a launcher's jobs are separate processes)
                log.info("cache hit after wait (pid %d): %s", os.getpid(), entry)
                return self._hit(entry)
            tmp = entry.with_name(f".tmp-{entry.name}-{uuid.uuid4().hex[:8]}")
            tmp.mkdir(parents=True)
            try:
                started = time.perf_counter()
                build(tmp)
                seconds = round(time.perf_counter() - started, 2)
                (tmp / SPEC).write_text(json.dumps(to_plain(spec), indent=2, sort_keys=True))
                provenance = {"built_by": self.provenance, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "build_seconds": seconds,
                              **({"environment": self.environment} if numeric and self.environment else {})}
                (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2, sort_keys=True))
                (tmp / COMPLETE).touch()
                if entry.exists():  # leftover of a crashed build without the marker
                    shutil.rmtree(entry)
                os.rename(tmp, entry)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        log.info("cache write (pid %d): %s", os.getpid(), entry)
        return self._hit(entry)
