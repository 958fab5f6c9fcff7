"""Load a MUSE-layout corpus (the hub's muse-bench datasets or a local folder).

One code path for both: every subset/split goes through
``datasets.load_dataset(source, subset, split=split)``. A local folder therefore has to
look like the hub repository: data files plus a README.md whose YAML front matter
declares ``configs:`` (``config_name`` and ``data_files`` with ``split``/``path``), the
standard Hugging Face "manual configuration" format. The embedded mini corpus
(:mod:`quail_repro.data.mini_corpus`) is written that way, so what the tests exercise is
the same call the real benchmark goes through.

Every predictable failure becomes a :class:`~quail_repro.errors.DataError` naming the
source, subset, split and, for local folders, the file and field, because a raw
pyarrow/datasets traceback does not say which of the 12 splits is broken.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from quail_repro.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# subset -> (splits, required fields). The single description of the MUSE layout; the
# mini-corpus writer uses it too, so writer and loader cannot drift apart.
MUSE_LAYOUT: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "raw": (("forget", "retain1", "retain2", "holdout"), ("text",)),
    "verbmem": (("forget",), ("prompt", "gt")),
    "knowmem": (("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl"), ("question", "answer")),
    "privleak": (("forget", "retain", "holdout"), ("text",)),
}
#: kept where a split has it: the document an item comes from (the embedded corpus names it; the
#: bootstrap resamples one document's items together, each item alone where it is absent)
OPTIONAL_FIELDS = ("source",)


@dataclass
class MuseCorpus:
    """Everything the harness reads from a MUSE-layout dataset, as plain Python lists."""

    source: str
    raw: dict[str, list[str]]  # split -> texts
    verbmem: list[dict]  # {"prompt", "gt"}
    knowmem: dict[str, list[dict]]  # split -> {"question", "answer"}
    privleak: dict[str, list[str]]  # split -> texts
    # "subset/split" -> why it is absent (only for subsets load_muse was told are optional);
    # an absent split is empty above, and the metrics that need it are skipped, never zero
    missing: dict[str, str] = field(default_factory=dict)


def load_muse(source: str, *, max_items: int | None = None, optional: tuple[str, ...] = ()) -> MuseCorpus:
    """Load all 12 MUSE splits from a hub id (``muse-bench/MUSE-News``) or a local folder.

    ``max_items`` keeps the first N records of every split (for smoke runs); None keeps
    all. Only the required fields are kept, each checked to be a string (and an item's ``source``
    where the split has one). In a local folder,
    a split of a subset named in ``optional`` may be absent (not declared, or its file
    missing): it is logged and listed in ``MuseCorpus.missing`` instead of failing.
    """
    unknown = sorted(set(optional) - set(MUSE_LAYOUT))
    if unknown:
        raise ConfigError(f"load_muse: optional subsets {unknown} are not MUSE subsets {sorted(MUSE_LAYOUT)}")
    if max_items is not None and (not isinstance(max_items, int) or max_items < 1):
        raise ConfigError(f"load_muse: max_items must be a positive integer or None, got {max_items!r}")
    source = str(source)
    local = _local_folder(source)
    declared = _read_local_configs(local) if local is not None else None

    files_of: dict[tuple[str, str], list[Path] | None] = {}
    missing: dict[str, str] = {}
    for subset, (split_names, _) in MUSE_LAYOUT.items():
        for split in split_names:
            # every file is checked before the first load: datasets resolves the files of
            # all configs at once, so one missing file would otherwise fail every load
            # with a message about whichever split happened to be loaded first
            try:
                files_of[subset, split] = (
                    _check_local_split(local, declared, subset, split) if declared is not None else None
                )
            except DataError as err:
                if subset not in optional:
                    raise
                missing[f"{subset}/{split}"] = str(err)
                log.warning("%s/%s is absent; the metrics that need it are skipped: %s", subset, split, err)

    splits: dict[tuple[str, str], list[dict]] = {}
    # A local folder gets a private, throw-away datasets cache. datasets keys the cache
    # of a manual-configuration folder on the folder's *name* and the README's configs
    # only (not the data files' contents or mtimes: checked with datasets 5.2.0), so a
    # regenerated corpus, or another folder with the same name, would silently load
    # stale rows from HF_HOME. The hub path keeps the normal cache (downloads are keyed
    # on the repository revision).
    with contextlib.ExitStack() as stack:
        kwargs: dict[str, Any] = {}
        if local is not None:
            kwargs["cache_dir"] = stack.enter_context(tempfile.TemporaryDirectory(prefix="quail_muse_"))
        stack.enter_context(_quiet_progress_bars())
        for subset, (split_names, fields) in MUSE_LAYOUT.items():
            present = [sp for sp in split_names if f"{subset}/{sp}" not in missing]
            # datasets resolves every declared file of a subset: with one absent, name the present ones
            sub_kwargs = dict(kwargs, data_files={sp: [str(f) for f in files_of[subset, sp]] for sp in present}) \
                if len(present) < len(split_names) else kwargs
            for split in split_names:
                if split not in present:
                    splits[subset, split] = []
                    continue
                files = files_of[subset, split]
                siblings = {sp: files_of[subset, sp] for sp in present} if declared is not None else None
                ds = _load_split(source, subset, split, files, siblings, fields, sub_kwargs)
                splits[subset, split] = _records(ds, source, subset, split, fields, files, max_items)

    return MuseCorpus(
        source=source,
        raw={s: [r["text"] for r in splits["raw", s]] for s in MUSE_LAYOUT["raw"][0]},
        verbmem=splits["verbmem", "forget"],
        knowmem={s: splits["knowmem", s] for s in MUSE_LAYOUT["knowmem"][0]},
        privleak={s: [r["text"] for r in splits["privleak", s]] for s in MUSE_LAYOUT["privleak"][0]},
        missing=missing,
    )


# ----------------------------------------------------------------------------- helpers


def _where(source: str, subset: str, split: str, files: list[Path] | None = None) -> str:
    where = f"MUSE source {source!r}, subset {subset!r}, split {split!r}"
    if files:
        where += ", file " + ", ".join(str(f) for f in files)
    return where


def _local_folder(source: str) -> Path | None:
    """The folder ``source`` names, None for a hub id; DataError for a missing path.

    A string that exists on disk is a local source (as in datasets itself). One that does
    not exist but is clearly a path (absolute, ./ ../ ~, or more than one '/') is reported
    as a missing folder instead of being sent to the hub as a repository id.
    """
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise DataError(
                f"MUSE source {source!r}: {path} is a file; expected a folder in the MUSE layout or a hub id"
            )
        return path.resolve()
    looks_like_path = source.startswith(("/", "./", "../", "~", ".\\")) or source.count("/") != 1
    if looks_like_path:
        raise DataError(f"MUSE source {source!r}: local folder {path} does not exist")
    return None


def _read_local_configs(folder: Path) -> dict[str, dict[str, list[str]]]:
    """Parse README.md's front matter into {config_name: {split: [path patterns]}}."""
    import yaml  # a dependency of datasets

    readme = folder / "README.md"
    if not readme.is_file():
        raise DataError(
            f"MUSE source {str(folder)!r}: missing {readme}; a local folder needs a README.md whose YAML "
            "front matter declares `configs:` (config_name, data_files with split and path)"
        )
    text = readme.read_text(encoding="utf-8")
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---" or "---" not in [ln.strip() for ln in lines[1:]]:
        raise DataError(
            f"MUSE source {str(folder)!r}: {readme} has no YAML front matter (--- ... ---) declaring `configs:`"
        )
    end = 1 + [ln.strip() for ln in lines[1:]].index("---")
    try:
        meta = yaml.safe_load("\n".join(lines[1:end])) or {}
    except yaml.YAMLError as e:
        raise DataError(f"MUSE source {str(folder)!r}: {readme} front matter is not valid YAML: {e}") from e
    configs = meta.get("configs") if isinstance(meta, dict) else None
    if not isinstance(configs, list) or not configs:
        raise DataError(f"MUSE source {str(folder)!r}: {readme} front matter declares no `configs:` list")
    out: dict[str, dict[str, list[str]]] = {}
    for cfg in configs:
        if not isinstance(cfg, dict) or "config_name" not in cfg:
            raise DataError(f"MUSE source {str(folder)!r}: {readme}: a `configs:` entry lacks `config_name`: {cfg!r}")
        data_files = cfg.get("data_files")
        per_split: dict[str, list[str]] = {}
        if isinstance(data_files, (str, list)) and not (
            isinstance(data_files, list) and data_files and isinstance(data_files[0], dict)
        ):
            per_split["train"] = [data_files] if isinstance(data_files, str) else list(data_files)
        elif isinstance(data_files, list):
            for entry in data_files:
                if not isinstance(entry, dict) or "split" not in entry or "path" not in entry:
                    raise DataError(
                        f"MUSE source {str(folder)!r}: {readme}: config {cfg['config_name']!r} has a data_files "
                        f"entry without `split` and `path`: {entry!r}"
                    )
                paths = entry["path"]
                per_split[str(entry["split"])] = [paths] if isinstance(paths, str) else list(paths)
        else:
            raise DataError(
                f"MUSE source {str(folder)!r}: {readme}: config {cfg['config_name']!r} declares no data_files"
            )
        out[str(cfg["config_name"])] = per_split
    return out


def _check_local_split(folder: Path, declared: dict, subset: str, split: str) -> list[Path]:
    """Resolve a local split to its files, naming exactly what is missing.

    """
    readme = folder / "README.md"
    if subset not in declared:
        raise DataError(
            f"{_where(str(folder), subset, split)}: subset {subset!r} is not declared in {readme} "
            f"(declared: {sorted(declared)})"
        )
    if split not in declared[subset]:
        raise DataError(
            f"{_where(str(folder), subset, split)}: split {split!r} is not declared for config {subset!r} in "
            f"{readme} (declared: {sorted(declared[subset])})"
        )
    files: list[Path] = []
    for pattern in declared[subset][split]:
        full = folder / pattern
        if glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(str(full), recursive=True))
            if not matches:
                raise DataError(f"{_where(str(folder), subset, split)}: no file matches {full} (declared in {readme})")
            files.extend(matches)
        elif not full.is_file():
            raise DataError(f"{_where(str(folder), subset, split)}: missing file {full} (declared in {readme})")
        else:
            files.append(full)
    return files


def _load_split(source, subset, split, files, siblings, fields, kwargs):
    """``datasets.load_dataset(source, subset, split=split)``, failures wrapped in DataError.

    datasets builds every split of a subset when one is requested, so a broken file of a
    sibling split (raw/retain2 while loading raw/forget) fails this call: for local JSON
    Lines files the culprit is located and named rather than the split being loaded.
    """
    import datasets

    target = source if files is None else str(Path(source).expanduser().resolve())
    try:
        return datasets.load_dataset(target, subset, split=split, **kwargs)
    except Exception as e:  # datasets/pyarrow raise many unrelated types; all become DataError
        detail = _exception_chain(e)
        if siblings is not None:
            for sp, sp_files in siblings.items():
                problem = _scan_jsonl(sp_files, fields)
                if problem:
                    bad_file, text = problem
                    raise DataError(
                        f"{_where(source, subset, sp, [bad_file])}: {text} (found while datasets built subset "
                        f"{subset!r} for split {split!r}; library error: {detail})"
                    ) from e
        elif datasets.config.HF_HUB_OFFLINE:
            detail += " (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set: a hub id can only come from the local cache)"
        raise DataError(f"{_where(source, subset, split, files)}: could not load: {detail}") from e


def _exception_chain(e: BaseException) -> str:
    """'Type: message' of an exception and its causes (DatasetGenerationError hides the
    useful pyarrow message in __cause__; StopIteration from an empty file has none)."""
    parts, seen = [], set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        msg = str(e).strip()
        if len(msg) > 400:
            msg = msg[:400] + " ..."
        parts.append(f"{type(e).__name__}: {msg}" if msg else type(e).__name__)
        e = e.__cause__ or e.__context__
    return " <- ".join(parts)


def _scan_jsonl(files: list[Path], fields: tuple[str, ...]) -> tuple[Path, str] | None:
    """First problem in local JSON Lines files: (file, 'line N ...'), or None.

    Only used to explain a failed load; the data itself is always read by datasets.
    """
    for f in files:
        if f.suffix not in (".jsonl", ".ndjson"):
            continue
        try:
            with open(f, encoding="utf-8") as fh:
                n_records = 0
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    n_records += 1
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as je:
                        return f, f"line {lineno} is not valid JSON ({je.msg} column {je.colno})"
                    if not isinstance(rec, dict):
                        return f, f"line {lineno} is a JSON {type(rec).__name__}, expected an object"
                    for field in fields:
                        if field not in rec or rec[field] is None:
                            return f, f"line {lineno} lacks the required field {field!r}"
                        if not isinstance(rec[field], str):
                            return f, f"line {lineno} field {field!r} is {type(rec[field]).__name__}, expected a string"
                if n_records == 0:
                    return f, "the file is empty"
        except UnicodeDecodeError as ue:
            return f, f"the file is not UTF-8 ({ue})"
    return None


def _records(ds, source, subset, split, fields, files, max_items) -> list[dict]:
    """Check and convert one split: non-empty, every required field present and a string."""
    where = _where(source, subset, split, files)
    n = len(ds)
    if n == 0:
        raise DataError(f"{where}: the split is empty")
    missing = [f for f in fields if f not in ds.column_names]
    if missing:
        _raise_located(where, files, fields,
                       f"records lack the required field(s) {missing} (found columns {ds.column_names})")
    if max_items is not None:
        ds = ds.select(range(min(max_items, n)))
    columns = {f: ds[f] for f in fields}
    optional = {f: ds[f] for f in OPTIONAL_FIELDS if f in ds.column_names}
    records = []
    for i in range(len(ds)):
        rec = {}
        for f in fields:
            value = columns[f][i]
            if value is None or not isinstance(value, str):
                # JSON readers fill a field a record lacks with None
                problem = "lacks the required field" if value is None else f"has a {type(value).__name__} in field"
                _raise_located(where, files, fields, f"record {i + 1} {problem} {f!r}")
            rec[f] = value
        rec |= {f: str(values[i]) for f, values in optional.items() if values[i] is not None}
        records.append(rec)
    return records


def _raise_located(where: str, files: list[Path] | None, fields, fallback: str):
    """Raise a DataError with the file line when the split is local JSON Lines."""
    located = _scan_jsonl(files, fields) if files else None
    if located:
        raise DataError(f"{where}: {located[1]}")
    raise DataError(f"{where}: {fallback}")


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Hide datasets' per-split progress bars during a load; restore the caller's setting."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


__all__ = ["MUSE_LAYOUT", "MuseCorpus", "load_muse"]
