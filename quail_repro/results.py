"""results.json: one schema, written and read through this module only.

A run's results are a :class:`Results` object. ``write_results`` serialises it (never
replacing a finished run's results with a failure), ``read_results`` parses a file back
into the same classes, and every consumer (the printed table, the sweep report, the W&B
logger, the dashboard) reads fields, not string keys. The metric lists below are the
only place the metric names are spelled.

Version history: 1 (implicit, no field): the first layout; 2: ``schema_version``, the
QUAIL hinge activity in ``unlearning`` and ``recovery_items``; 3: the classification task's
metrics (``acc_forget`` ... ``mia_auc``, written only by classification runs); 4: ``machine``
(CPU, its kernel level, torch threads and version, GPU: quail_repro.machine); 5: ``machine.numerics``
(the numeric environment the cache keys carry: quail_repro.numerics) and ``provenance``: per cache
entry the run used, the machine that built it and when (a shared cache's entry may come from another
machine); 6: ``unlearning.stopped_early`` (method.early_stop), ``wall_seconds`` and each provenance
entry's ``build_seconds`` (where a run's time went).
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA_VERSION = 6


@dataclass(frozen=True)
class Metric:
    key: str  # the field name in results.json
    paper: str  # [1]'s and QUAIL's column name
    what: str
    better: str  # ↓ lower, ↑ higher, →0 closer to zero


#: MUSE's four metrics in [1]'s column order (M1-M4)
MUSE_METRICS = (Metric("verbmem_f", "M1", "VerbMem forget", "↓"), Metric("knowmem_f", "M2", "KnowMem forget", "↓"),
                Metric("privleak", "M3", "PrivLeak", "→0"), Metric("knowmem_r", "M4", "KnowMem retain", "↑"))
METRICS = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak")
#: the classification task's metrics (classification.evaluate_classifier), in its table's column order;
#: acc/f1 in %, mia_auc a raw AUC (0.5 = forget posts look like unseen test posts)
CLASSIFICATION_METRICS = (Metric("acc_forget", "acc-f", "accuracy on forget", "↓"),
                          Metric("acc_retain", "acc-r", "accuracy on retain", "↑"),
                          Metric("acc_test", "acc-t", "accuracy on test", "↑"),
                          Metric("f1_test", "F1-t", "macro-F1 on test", "↑"),
                          Metric("mia_auc", "MIA", "loss-based membership-inference AUC, forget vs test", "→0.5"),
                          Metric("acc_poison_true", "acc-p", "accuracy on poisoned posts under their true labels",
                                 "↑"))
#: the metrics whose recovery under quantization is measured (higher = remembers more)
RECOVERY_METRICS = ("knowmem_f", "verbmem_f")
CLASSIFICATION_RECOVERY_METRICS = ("acc_forget",)
#: per metric: the generations.json list and the per-item score the recovery ratio's items come from
RECOVERY_ITEMS = {"knowmem_f": ("knowmem_f", "rougeL"), "verbmem_f": ("verbmem_f", "rougeL"),
                  "acc_forget": ("forget", "correct")}

#: run outcomes: ok; partial (some precision failed); diverged (unlearning stopped); failed
FINISHED = ("ok", "partial")


@dataclass
class PrecisionMetrics:
    """One precision's evaluation: MUSE's metrics, or a failure with its message."""
    status: str = "ok"
    verbmem_f: float | None = None
    knowmem_f: float | None = None
    knowmem_r: float | None = None
    privleak: float | None = None
    privleak_auc: float | None = None
    # the classification task (schema 3); f1_forget / f1_retain besides the table's f1_test
    acc_forget: float | None = None
    acc_retain: float | None = None
    acc_test: float | None = None
    f1_forget: float | None = None
    f1_retain: float | None = None
    f1_test: float | None = None
    mia_auc: float | None = None
    acc_poison_true: float | None = None  # only with a label-flip (poisoning) forget set
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def get(self, key: str) -> float | None:
        return getattr(self, key) if self.ok else None

    @property
    def classification(self) -> bool:
        return self.acc_forget is not None

    def to_dict(self) -> dict[str, Any]:
        """A finished precision as its metrics only (a task's own: a MUSE run has no acc_*, a
        classification run no verbmem_f); a failed one as its status and error."""
        if self.ok:
            unset = CLASSIFICATION_FIELDS + (MUSE_FIELDS if self.classification else ())  # left out when None
            return {k: v for k, v in asdict(self).items() if k not in ("status", "error")
                    and not (v is None and k in unset)}
        return {"status": self.status, "error": self.error}


CLASSIFICATION_FIELDS = ("acc_forget", "acc_retain", "acc_test", "f1_forget", "f1_retain", "f1_test", "mia_auc",
                         "acc_poison_true")
MUSE_FIELDS = (*METRICS, "privleak_auc")


@dataclass
class Unlearning:
    """How the unlearning stage ended; for QUAIL, whether its hinge ever acted."""
    status: str = "ok"  # ok | diverged
    steps: int | None = None
    stopped_early: bool | None = None  # method.early_stop set: whether its criterion ended the run
    margin: float | None = None  # QUAIL: the margin as resolved at run time (auto from a quantizer)
    hinge_active_steps: int | None = None  # QUAIL: steps whose hinge term was > 0
    hinge_mean: float | None = None  # QUAIL: the hinge term's mean over all steps
    step: int | None = None  # diverged: where, why, at what loss
    loss: float | None = None
    reason: str | None = None

    @property
    def hinge_inactive(self) -> bool:
        """A QUAIL run whose hinge never acted: its model is its base method's, bit for bit."""
        return self.hinge_active_steps == 0


@dataclass
class Results:
    model: str
    dataset: str
    method: str
    seed: int
    status: str = "running"
    error: str | None = None
    privleak_auc_retrain: float | None = None
    unlearning: Unlearning | None = None
    metrics: dict[str, PrecisionMetrics] = field(default_factory=dict)  # precision name -> metrics
    quant: dict[str, dict] = field(default_factory=dict)  # precision name -> quantizer.describe()
    # precision -> metric -> (unlearned at q - unlearned at full) / (target at q - unlearned at full)
    recovery: dict[str, dict[str, float | None]] = field(default_factory=dict)
    # precision -> metric -> per-question scores {"full", "quant", "target_quant"} (0..1, one per item, same
    # order): what the ratio is computed from, kept so a report can bootstrap it over questions and seeds
    recovery_items: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    analysis: dict[str, dict] = field(default_factory=dict)  # precision -> bucket analysis (or a failure)
    # metric -> why the data could not give it ("skipped: ...") or gave it otherwise (dataset=muse_dir)
    notes: dict[str, str] = field(default_factory=dict)
    # precision -> lm-eval task -> {metric: value} (eval.utility; absent when it is off)
    utility: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)
    # where the numbers were made (machine.describe()): another CPU or thread count gives other numbers
    machine: dict[str, Any] = field(default_factory=dict)
    # cache entry -> {"built_by": machine.describe() of the machine that built it, "built_at", "build_seconds"}
    provenance: dict[str, dict] = field(default_factory=dict)
    wall_seconds: float | None = None  # this run, start to results.json (cached stages take ~0)
    schema_version: int = SCHEMA_VERSION

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def metric(self, precision: str, key: str) -> float | None:
        m = self.metrics.get(precision)
        return m.get(key) if m is not None else None

    def recovery_of(self, precision: str, key: str) -> float | None:
        return (self.recovery.get(precision) or {}).get(key)

    def analysis_of(self, precision: str, key: str) -> Any:
        stats = self.analysis.get(precision) or {}
        return None if stats.get("status") == "failed" else stats.get(key)

    def to_dict(self) -> dict[str, Any]:
        # sections a run does not have (no error, no unlearning, a target row's analysis) are left out
        optional = ("error", "unlearning", "recovery", "recovery_items", "analysis", "notes", "utility",
                    "machine", "provenance", "wall_seconds")
        out = {k: v for k, v in asdict(self).items() if not (k in optional and not v)}
        out["metrics"] = {q: m.to_dict() for q, m in self.metrics.items()}
        if self.unlearning is not None:
            out["unlearning"] = _without_none(asdict(self.unlearning))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Results":
        version = d.get("schema_version", 1)
        if version > SCHEMA_VERSION:
            raise ValueError(f"results schema_version {version} is newer than this code's {SCHEMA_VERSION}")
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["metrics"] = {q: _precision(m) for q, m in (d.get("metrics") or {}).items()}
        if d.get("unlearning") is not None:
            kw["unlearning"] = Unlearning(**_known(Unlearning, d["unlearning"]))
        kw["schema_version"] = version
        return cls(**kw)


def _without_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def _known(cls, d: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def _precision(d: dict) -> PrecisionMetrics:
    # version 1 had no status on a finished precision
    return PrecisionMetrics(**{"status": "ok", **_known(PrecisionMetrics, d)})


def read_results(path: str | Path) -> Results:
    return Results.from_dict(json.loads(Path(path).read_text()))


def write_json(path: Path, obj: Any) -> None:
    """Write atomically: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


#: a run's claim on its folder (claim_run_dir)
OWNER_FILE = ".owner"


def claim_run_dir(run_dir: Path) -> str:
    """Mark ``run_dir`` as this run's and return the mark. A run started later in the same folder
    (a sweep resumed while a worker of the stopped one still runs its job) takes the folder over;
    the earlier run then writes beside the new run's files, not over them (write_results)."""
    owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    (Path(run_dir) / OWNER_FILE).write_text(owner)
    return owner


def owns(run_dir: Path, owner: str | None) -> bool:
    """Whether ``owner`` (claim_run_dir's mark; None: no claim was made) still holds ``run_dir``."""
    if owner is None:
        return True
    try:
        return (Path(run_dir) / OWNER_FILE).read_text() == owner
    except FileNotFoundError:
        return False


def write_generations(run_dir: Path, generations: dict[str, dict], owner: str | None = None) -> None:
    """Every prompt, reference, output and per-item score behind each precision's metrics:
    generations/PRECISION.json (not written once another run has taken the folder over)."""
    if not owns(run_dir, owner):
        log.error("%s belongs to another run now; this run's generations are not written", run_dir)
        return
    (run_dir / "generations").mkdir(exist_ok=True)
    for qname, gens in generations.items():
        write_json(run_dir / "generations" / f"{qname}.json", gens)


def write_results(run_dir: Path, results: Results, owner: str | None = None) -> Path:
    """results.json, unless that would replace a finished run's results with a failure, or the
    folder now belongs to another run (``owner``: this run's claim_run_dir mark): then beside it."""
    path = Path(run_dir) / "results.json"
    if not owns(run_dir, owner):
        path = path.with_name(f"results.superseded-{owner}.json")
        log.error("%s belongs to another run now (started there after this one); this run's results "
                  "go to %s, not over that run's", run_dir, path.name)
    elif path.exists() and not results.finished:
        try:
            previous = read_results(path)
        except (ValueError, TypeError, json.JSONDecodeError):
            previous = None
        if previous is not None and previous.finished:
            path = path.with_name("results.failed.json")
            log.warning("keeping the finished results.json; this run's outcome goes to %s", path)
    write_json(path, results.to_dict())
    return path


def format_table(results: Results) -> str:
    """The run's metrics as the terminal shows them, with the recovery ratio per precision."""
    head = f"{results.method} on {results.dataset} ({results.model}): {results.status}"
    classification = any(m.ok and m.classification for m in results.metrics.values())
    keys = [m.key for m in CLASSIFICATION_METRICS] if classification else METRICS
    width = 16 if classification else 11
    name_width = max([12, *(len(q) + 1 for q in results.metrics)])  # llamacpp_q4_k_m is 15
    rows = [head, f"{'precision':<{name_width}}" + "".join(f"{k:>{width}}" for k in keys)]
    for qname, m in results.metrics.items():
        if not m.ok:
            rows.append(f"{qname:<{name_width}} failed: {m.error}")
            continue
        rows.append(f"{qname:<{name_width}}" + "".join(f"{v:>{width}.{3 if k == 'mia_auc' else 1}f}" if v is not None
                                            else f"{'n/a':>{width}}" for k, v in ((k, m.get(k)) for k in keys)))
    if results.unlearning is not None and results.unlearning.hinge_inactive:
        rows.append("QUAIL hinge never active: this model is its base method's")
    if results.recovery:
        key, name = ("acc_forget", "acc-forget") if classification else ("knowmem_f", "KnowMem-f")
        rows.append(f"{name} recovery ratio: " + ", ".join(
            f"{q} {'undefined' if r.get(key) is None else format(r[key], '.2f')}"
            for q, r in results.recovery.items()))
    for q, tasks in results.utility.items():  # eval.utility's lm-eval scores
        rows.append(f"utility at {q}: " + ", ".join(f"{t} {k} {v:.3f}" for t, scores in tasks.items()
                                                    for k, v in scores.items() if v is not None))
    for metric, note in results.notes.items():
        rows.append(f"{metric}: {note}")
    return "\n".join(rows)
