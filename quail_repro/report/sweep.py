"""A sweep folder read back: the grid of jobs (expanded as Hydra's basic sweeper does), each
job's config and results, and the table's rows (a row holds the jobs that differ only in their
seed: one job, or several when ``seed`` is swept)."""
from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from quail_repro.report.cells import Spread, fmt
from quail_repro.results import Results, read_results


@dataclass
class Job:
    num: int
    overrides: list[str]
    keys: dict[str, str]  # swept key -> this job's value (the seed apart)
    seed: str | None = None  # this job's seed, when the seed is swept
    dir: Path | None = None
    config: DictConfig | None = None
    results: Results | None = None
    read_error: str | None = None  # results.json exists but could not be read

    @property
    def label(self) -> str:
        return " ".join(self.keys.values()) + (f" seed={self.seed}" if self.seed is not None else "")

    @property
    def status(self) -> str:
        if self.results is not None:
            return self.results.status
        if self.read_error is not None:
            return "unreadable"
        return "unfinished" if self.dir is not None else "missing"

    @property
    def hinge_inactive(self) -> bool:
        """A QUAIL run whose hinge never acted: its model is its base method's, so are its numbers."""
        unlearning = self.results.unlearning if self.results is not None else None
        return unlearning is not None and unlearning.hinge_inactive

    @property
    def absent_reason(self) -> str:
        """Why the job has no numbers to show (in a cell over seeds: "1 failed")."""
        return "hinge inactive" if self.hinge_inactive else self.status

    @property
    def shows_numbers(self) -> bool:
        """Whether the job's numbers are a result of their own (finished, and not a copy of its base)."""
        return self.results is not None and self.results.finished and not self.hinge_inactive

    def status_text(self) -> str:
        """The status as a table shows it: what went wrong, briefly (the full error goes to the notes)."""
        s, r = self.status, self.results
        if s == "diverged":
            return f"diverged at step {r.unlearning.step if r.unlearning else '?'}"
        if s == "failed":
            return f"failed: {(r.error or '?').split(':')[0]}"
        if s == "unfinished":
            return "unfinished (no results.json)"
        if s == "missing":
            return "missing (not run)"
        if s == "unreadable":
            return "unreadable results.json"
        if self.hinge_inactive:
            return "= base (hinge inactive)"
        return s

    def failure_note(self) -> list[str]:
        """What went wrong, in full (the table cell has the short form)."""
        r = self.results
        if self.status == "failed":
            return [f"{self.label} failed: {r.error}"]
        if self.status == "diverged":
            u = r.unlearning
            return [f"{self.label} diverged at step {u.step}: {u.reason} (loss {u.loss})"]
        if self.status == "unreadable":
            return [f"{self.label}: {self.read_error}"]
        return []

    def get(self, dotted: str) -> Any:
        """A config value (``method.hinge.gamma``) or, with a ``results.`` prefix, a results field
        (``results.unlearning.margin``)."""
        if dotted.startswith("results."):
            node: Any = self.results
            for part in dotted.split(".")[1:]:
                node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
            return node
        return OmegaConf.select(self.config, dotted, default=None) if self.config is not None else None


def combined_status(statuses: list[str]) -> str:
    """The seeds' statuses as one: ``ok``, or each with how many seeds have it (``2× ok, 1× failed: X``)."""
    counts = Counter(statuses)
    if len(counts) == 1:
        return statuses[0]
    return ", ".join(f"{n}× {status}" for status, n in counts.items())


@dataclass
class Row:
    """One line of a table: the jobs that differ only in their seed (one job without a seed sweep)."""
    keys: dict[str, str]
    jobs: list[Job]

    @property
    def label(self) -> str:
        return " ".join(self.keys.values())

    @property
    def seeded(self) -> bool:
        return len(self.jobs) > 1

    @property
    def shown(self) -> list[Job]:
        """The jobs whose numbers the row shows."""
        return [j for j in self.jobs if j.shows_numbers]

    def status_text(self) -> str:
        return combined_status([j.status_text() for j in self.jobs])

    def cell(self, value_of: Callable[[Results], Any]) -> Any:
        """A numeric column's cell: ``value_of(results)`` for one job (None when it has no numbers
        to show); over seeds, a Spread of the numbers, counting why the other seeds have none."""
        if not self.seeded:
            job = self.jobs[0]
            return value_of(job.results) if job.shows_numbers else None
        values, absent = [], Counter()
        for job in self.jobs:
            value = value_of(job.results) if job.shows_numbers else job.absent_reason
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values.append(float(value))
            else:  # a string says why (failed, not evaluated); None: the run had no value
                absent["undefined" if value is None else value] += 1
        return Spread(tuple(values), tuple(absent.items()))

    def get(self, dotted: str) -> Any:
        """A ``show`` value (Job.get): the one value the seeds share, or each seed's."""
        # every seed's, in order, duplicates included: "11 / 11 / 8", never "11 / 8" for three seeds
        values = [v for v in (j.get(dotted) for j in self.jobs) if v is not None]
        if any(v != values[0] for v in values):
            return " / ".join(fmt(v, "text") for v in values)
        return values[0] if values else None


@dataclass
class Sweep:
    config: DictConfig  # multirun.yaml
    jobs: list[Job]
    rows: list[Row]
    seeds: list[str] = field(default_factory=list)  # the swept seeds; empty without a seed sweep
    notes: list[str] = field(default_factory=list)  # what did not fit the grid

    @property
    def keys(self) -> list[str]:
        """The keys that name a row."""
        return list(self.rows[0].keys) if self.rows else []


def expand_grid(hydra_cfg: DictConfig) -> tuple[list[list[str]], list[str]]:
    """Every job's overrides, in launch order, and the keys that take several values.

    The cartesian product of hydra.sweeper.params and the command-line overrides, as
    hydra's BasicSweeper.split_arguments builds it (command line replacing a param of the same key).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (hydra_cfg.sweeper.get("params") or {}).items()]
    per_key: dict[str, list[str]] = {}
    for o in OverridesParser.create().parse_overrides(params + list(hydra_cfg.overrides.task)):
        key = o.get_key_element()
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        per_key[key] = [f"{key}={v}" for v in values]
    swept = [k for k, v in per_key.items() if len(v) > 1]
    return [list(job) for job in itertools.product(*per_key.values())], swept


def _read(job: Job) -> None:
    path = job.dir / "results.json"
    if not path.exists():
        return
    try:
        job.results = read_results(path)
    except (ValueError, TypeError) as err:  # not JSON, or not this schema
        job.read_error = f"could not read {path}: {err}"


@functools.lru_cache(maxsize=8192)
def _load_yaml_version(path: str, mtime_ns: int, size: int) -> DictConfig:
    return OmegaConf.load(path)


def _load_yaml(path: Path) -> DictConfig:
    """OmegaConf.load, memoised by path, mtime and size (the callers only read the result). The
    table is rebuilt after every job of a sweep; parsing every earlier job's config.yaml again
    each time made that quadratic, most of a cached 42-job sweep's wall-clock."""
    return _load_yaml_version(*_version(path))


def _version(path: Path) -> tuple[str, int, int]:
    """The memo key of a file: its path, modification time and size."""
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=8192)
def _resolved_version(path: str, mtime_ns: int, size: int) -> dict:
    return OmegaConf.to_container(_load_yaml_version(path, mtime_ns, size), resolve=True)


def resolved_config(job: "Job") -> dict | None:
    """The job's config resolved into plain values, memoised like _load_yaml (resolving every job's
    config again at each rebuild was the next quadratic cost); None without a config. Read only."""
    if job.dir is None or job.config is None:
        return None
    return _resolved_version(*_version(job.dir / ".hydra" / "config.yaml"))


def collect(sweep_dir: str | Path) -> Sweep:
    """The sweep's config (multirun.yaml), its jobs in grid order, and notes on what did not fit."""
    sweep_dir = Path(sweep_dir)
    mr = sweep_dir / "multirun.yaml"
    if not mr.exists():
        raise FileNotFoundError(f"{sweep_dir} is not a sweep folder: it has no multirun.yaml")
    sweep_cfg = _load_yaml(mr)
    grid, swept = expand_grid(sweep_cfg.hydra)
    found = {}
    for d in sorted(p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").exists()):
        found[frozenset(OmegaConf.to_container(_load_yaml(d / ".hydra" / "overrides.yaml")))] = d
    seed_key = next((k for k in swept if k.lstrip("+~") == "seed"), None)
    jobs, rows = [], {}
    for num, overrides in enumerate(grid):
        values = dict(o.split("=", 1) for o in overrides)
        keys = {k: values[k] for k in swept if k != seed_key} or {"method": str(sweep_cfg.method.name)}
        job = Job(num=num, overrides=overrides, keys=keys, seed=values.get(seed_key))
        job.dir = found.pop(frozenset(overrides), None)
        if job.dir is not None:
            job.config = _load_yaml(job.dir / ".hydra" / "config.yaml")
            _read(job)
        jobs.append(job)
        rows.setdefault(tuple(keys.items()), Row(keys, [])).jobs.append(job)
    seeds = list(dict.fromkeys(j.seed for j in jobs)) if seed_key else []
    sweep = Sweep(sweep_cfg, jobs, list(rows.values()), seeds)
    if found:
        sweep.notes.append(f"ignored {len(found)} run folder(s) not in this sweep's grid: "
                           + ", ".join(sorted(d.name for d in found.values())))
    return sweep


def precision_labels(jobs: list[Job], sweep_cfg: DictConfig | None = None) -> dict[str, str]:
    """{quant name: column label} in sweep order: full, or N-bit (with the quantizer's name when
    two quantizers share a bit width)."""
    quant: dict[str, Any] = {}
    for cfg in [j.config for j in jobs if j.config is not None] + ([sweep_cfg] if sweep_cfg is not None else []):
        for name, q in (cfg.get("quant") or {}).items():
            quant.setdefault(name, q)
    bits = {n: (None if n == "none" else q.get("bits")) for n, q in quant.items()}
    labels = {}
    for n, b in bits.items():
        if b is None:
            labels[n] = "full" if n == "none" else n
        else:
            shared = sum(1 for v in bits.values() if v == b) > 1
            labels[n] = f"{b}-bit {n}" if shared else f"{b}-bit"
    return labels


def quant_descriptions(jobs: list[Job], sweep_cfg: DictConfig, labels: dict[str, str]) -> dict[str, str]:
    """{quant name: its settings in words} for the table's notes."""
    out = {}
    for q in labels:
        for cfg in [j.config for j in jobs if j.config is not None] + [sweep_cfg]:
            node = (cfg.get("quant") or {}).get(q)
            if node is not None:
                parts = [q] + [f"{k} {node[k]}" for k in ("quant_type", "group_size", "symmetric") if k in node]
                out[q] = parts[0] + (f" ({', '.join(parts[1:])})" if parts[1:] else "")
                break
    return out
