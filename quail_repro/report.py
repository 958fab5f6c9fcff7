"""A sweep's finished runs as one table: NAME.md, NAME.csv, NAME.tex and NAME.png in the sweep folder.

    python -m quail_repro.report SWEEP_DIR [--wandb]

Runs by itself at the end of every sweep (TableCallback, registered in conf/config.yaml), and
keeps the files current after each job, so a sweep stopped half way still has its table.
Nothing is recomputed: the table is read from the run folders' results.json files.

* Rows: one per job of the sweep's grid, named by the values of the swept keys (the grid is
  expanded from the sweep folder's multirun.yaml the way Hydra's basic sweeper does it), in
  the sweep's order. A job without results says so ("missing", "unfinished"); a job that
  diverged or failed shows its status and no numbers.
* Columns: ``report.layout`` (set by the experiment config):
  - ``muse``: the four MUSE metrics M1-M4 at each precision of ``quant`` (full, 8-bit, 4-bit ...);
  - ``buckets``: the bucket analysis (|dw| statistics, bucket overlap) per quantizer.
* Published numbers ([1], science.md section 2) stand beside ours, with the difference, only
  for the same model, data and MUSE evaluation settings; otherwise they are listed apart as
  not comparable.
"""
from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from quail_repro import CONF_DIR

log = logging.getLogger(__name__)

#: (results key, paper name, what it measures, better direction); [1]'s and QUAIL's column order
MUSE_METRICS = [("verbmem_f", "M1", "VerbMem forget", "↓"), ("knowmem_f", "M2", "KnowMem forget", "↓"),
                ("privleak", "M3", "PrivLeak", "→0"), ("knowmem_r", "M4", "KnowMem retain", "↑")]
#: bucket-analysis columns: (results key, header, unit: sci | pct | num | ratio)
BUCKET_STATS = [("median_abs_dw", "median |Δw|", "sci"), ("p99_abs_dw", "p99 |Δw|", "sci"),
                ("max_abs_dw", "max |Δw|", "sci"), ("median_step", "median Δ", "sci"),
                ("frac_below_half_step", "|Δw| < Δ/2 (%)", "pct"), ("bucket_overlap", "bucket overlap (%)", "pct"),
                ("value_overlap", "value overlap (%)", "pct"), ("logit_shift_full", "logit shift full", "num"),
                ("logit_shift_quant", "logit shift quant.", "num"), ("kl_full", "KL full", "sci"),
                ("kl_quant", "KL quant.", "sci"), ("transfer_coef", "transfer coef.", "ratio"),
                ("transfer_cos", "transfer cos", "ratio")]

#: Zhang et al., ICLR 2025 [1], Table 1 (science.md section 2): (M1, M2, M3, M4) per method and
#: precision, for MUSE's Llama-2-7B models on MUSE data. Rows not recovered there are absent.
PUBLISHED = {
    "news": {
        "source": "[1] Table 1", "model": "llama2_7b_muse_news", "dataset": "muse_news",
        "rows": {("target", "full"): (58.4, 63.9, -99.8, 55.2), ("target", "4-bit"): (34.2, 54.4, -99.8, 48.2),
                 ("retrain", "full"): (20.8, 33.1, 0.0, 55.0),
                 ("npo_klr", "full"): (16.6, 36.6, -94.0, 33.3), ("npo_klr", "4-bit"): (34.1, 53.7, -99.8, 48.8),
                 ("ga_gdr", "full"): (0.0, 28.9, 87.1, 34.2), ("ga_gdr", "4-bit"): (25.0, 50.1, -99.1, 47.7)},
    },
    "books": {
        "source": "[1] Table 1", "model": "llama2_7b_muse_books", "dataset": "muse_books",
        "rows": {("target", "full"): (99.8, 59.4, -57.5, 66.9), ("target", "4-bit"): (85.3, 36.8, -60.1, 50.5),
                 ("retrain", "full"): (14.3, 28.9, 0.0, 74.5),
                 ("npo_klr", "full"): (12.4, 13.7, -40.7, 35.1), ("npo_klr", "4-bit"): (70.9, 34.2, -60.1, 50.4),
                 ("ga_klr", "full"): (13.0, 15.1, -40.8, 33.7), ("ga_klr", "4-bit"): (75.6, 34.6, -60.0, 51.3),
                 ("npo_gdr", "full"): (0.4, 13.4, -42.6, 58.6), ("npo_gdr", "4-bit"): (66.0, 31.9, -60.8, 53.2)},
    },
}
#: eval settings that do not change a number (ignored when checking we evaluate as MUSE does)
EVAL_NEUTRAL = {"batch_size"}

DEFAULT_REPORT = {"name": "sweep", "title": "", "claim": "", "layout": "muse", "show": {}, "published": [],
                  "figure": "knowmem_f"}


# -- the sweep's jobs ---------------------------------------------------------------------


@dataclass
class Job:
    num: int
    overrides: list[str]
    keys: dict[str, str]  # swept key -> this job's value
    dir: Path | None = None
    config: DictConfig | None = None
    results: dict | None = None

    @property
    def status(self) -> str:
        if self.results is not None:
            return self.results.get("status", "unknown")
        return "unfinished" if self.dir is not None else "missing"

    def status_text(self) -> str:
        """The status as a table shows it: what went wrong, briefly (the full error goes to the notes)."""
        s, r = self.status, self.results or {}
        if s == "diverged":
            u = r.get("unlearning", {})
            return f"diverged at step {u.get('step')}"
        if s == "failed":
            return f"failed: {r.get('error', '?').split(':')[0]}"
        if s == "unfinished":
            return "unfinished (no results.json)"
        if s == "missing":
            return "missing (not run)"
        return s

    def get(self, dotted: str) -> Any:
        """A config value (``method.hinge.gamma``) or, with a ``results.`` prefix, a results.json value."""
        if dotted.startswith("results."):
            node: Any = self.results or {}
            for part in dotted.split(".")[1:]:
                node = node.get(part) if isinstance(node, dict) else None
            return node
        return OmegaConf.select(self.config, dotted, default=None) if self.config is not None else None


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


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def collect(sweep_dir: Path) -> tuple[DictConfig, list[Job], list[str]]:
    """The sweep's config (multirun.yaml), its jobs in grid order, and notes on what did not fit."""
    mr = sweep_dir / "multirun.yaml"
    if not mr.exists():
        raise FileNotFoundError(f"{sweep_dir} is not a sweep folder: it has no multirun.yaml")
    sweep_cfg = OmegaConf.load(mr)
    grid, swept = expand_grid(sweep_cfg.hydra)
    found = {}
    for d in sorted(p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").exists()):
        found[frozenset(OmegaConf.to_container(OmegaConf.load(d / ".hydra" / "overrides.yaml")))] = d
    jobs, notes = [], []
    for num, overrides in enumerate(grid):
        keys = {k: o.split("=", 1)[1] for o in overrides for k in swept if o.split("=", 1)[0] == k}
        job = Job(num=num, overrides=overrides, keys=keys or {"method": str(sweep_cfg.method.name)})
        job.dir = found.pop(frozenset(overrides), None)
        if job.dir is not None:
            job.config = OmegaConf.load(job.dir / ".hydra" / "config.yaml")
            job.results = _read_json(job.dir / "results.json")
        jobs.append(job)
    if found:
        notes.append(f"ignored {len(found)} run folder(s) not in this sweep's grid: "
                     + ", ".join(sorted(d.name for d in found.values())))
    return sweep_cfg, jobs, notes


# -- tables -------------------------------------------------------------------------------


@dataclass
class Table:
    """Columns are (group, name) pairs; a cell is a number (in display units), a string or None."""
    name: str
    title: str
    columns: list[tuple[str, str]]
    formats: list[str]  # per column: text | num (1 decimal) | ratio (2) | sci | pct
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: list["Table"] = field(default_factory=list)  # shown after the table (md, tex, terminal)

    @property
    def headers(self) -> list[str]:
        return [f"{g} {n}" if g else n for g, n in self.columns]


def _key_name(key: str) -> str:
    """A swept key as a column header: ``+experiment/quail_ablation`` -> ``quail_ablation``."""
    return key.lstrip("+").split("/")[-1].split(".")[-1]


def precision_labels(jobs: list[Job], sweep_cfg: DictConfig) -> dict[str, str]:
    """{quant name: column label} in sweep order: full, or N-bit (with the quantizer's name when
    two quantizers share a bit width)."""
    quant: dict[str, Any] = {}
    for cfg in [j.config for j in jobs if j.config is not None] + [sweep_cfg]:
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


def _published_for(job: Job) -> tuple[dict | None, str]:
    """The published table this job can be compared with, or None and why not."""
    if job.config is None:
        return None, "no config"
    for pub in PUBLISHED.values():
        if job.config.dataset.name == pub["dataset"] and job.config.model.name == pub["model"]:
            muse_eval = OmegaConf.load(CONF_DIR / "eval" / "muse.yaml")
            mine = OmegaConf.to_container(job.config.eval, resolve=True)
            ref = OmegaConf.to_container(OmegaConf.merge({"seed": job.config.seed}, {"eval": muse_eval}).eval,
                                         resolve=True)
            for d in (mine, ref):
                for k in EVAL_NEUTRAL:
                    d.pop(k, None)
                d.get("decoding", {}).pop("seed", None)
            if mine != ref:
                return None, f"{job.config.model.name} on {job.config.dataset.name} but eval differs from eval=muse"
            return pub, ""
    return None, f"{job.config.model.name} on {job.config.dataset.name}"


def _failure_note(job: Job) -> list[str]:
    """What went wrong in a job, in full (the table cell has the short form)."""
    r, label = job.results or {}, " ".join(job.keys.values())
    if job.status == "failed":
        return [f"{label} failed: {r.get('error')}"]
    if job.status == "diverged":
        u = r.get("unlearning", {})
        return [f"{label} diverged at step {u.get('step')}: {u.get('reason')} (loss {u.get('loss')})"]
    return []


def _label_cells(job: Job, keys: list[str], show: dict[str, str]) -> list[Any]:
    return [job.keys.get(k) for k in keys] + [job.get(path) for path in show.values()]


def muse_table(name: str, report: dict, jobs: list[Job], sweep_cfg: DictConfig) -> Table:
    keys, show = list(jobs[0].keys) if jobs else [], dict(report["show"])
    labels = precision_labels(jobs, sweep_cfg)
    columns = [("", _key_name(k)) for k in keys] + [("", h) for h in show] + [("", "status")]
    formats = ["text"] * len(columns)
    for label in labels.values():
        for _, m, _, arrow in MUSE_METRICS:
            columns.append((label, m + arrow))
            formats.append("num")
    t = Table(name, report["title"], columns, formats)
    not_comparable = set()  # why some rows cannot stand beside published numbers
    for job in jobs:
        head = _label_cells(job, keys, show)
        ok = job.status in ("ok", "partial")
        cells = []
        for q in labels:
            m = (job.results or {}).get("metrics", {}).get(q) if ok else None
            for key, *_ in MUSE_METRICS:
                if not ok:
                    cells.append(None)
                elif m is None:
                    cells.append("not evaluated")
                elif m.get("status") == "failed":
                    cells.append("failed")
                else:
                    cells.append(m.get(key))
                if ok and m is not None and m.get("status") == "failed" and key == MUSE_METRICS[0][0]:
                    t.notes.append(f"{' '.join(job.keys.values())} at {q}: {m.get('error')}")
        t.rows.append(head + [job.status_text()] + cells)
        if not ok:
            t.notes += _failure_note(job)
            continue
        pub, why = _published_for(job)
        if pub is None:
            not_comparable.add(why)
            continue
        method = job.config.method.name
        published, delta = [], []
        for q in labels:  # a published "4-bit" stands beside every 4-bit column
            vals = pub["rows"].get((method, labels[q].split(" ")[0]))
            for i in range(len(MUSE_METRICS)):
                ours = cells[len(published)]
                published.append(vals[i] if vals else None)
                delta.append(ours - vals[i] if vals and isinstance(ours, (int, float)) else None)
        if any(v is not None for v in published):
            blank = [""] * len(head)
            t.rows.append(blank + [f"{pub['source']} published"] + published)
            t.rows.append(blank + ["Δ ours − published"] + delta)
    legend = ", ".join(f"{m} {what} ({arrow})" for _, m, what, arrow in MUSE_METRICS)
    t.notes.insert(0, f"{legend}; ROUGE-L ×100 (M1, M2, M4), PrivLeak % (M3; closer to 0 is better).")
    quant_desc = _quant_descriptions(jobs, sweep_cfg, labels)
    if quant_desc:
        t.notes.insert(1, "Columns: " + "; ".join(f"{labels[q]} = {d}" for q, d in quant_desc.items()) + ".")
    for corpus in report["published"]:
        if not any(_published_for(j)[0] is PUBLISHED[corpus] for j in jobs if j.status in ("ok", "partial")):
            t.extra.append(_published_table(corpus, sorted(not_comparable)))
    rec = _recovery_table(name, jobs, keys, labels)
    if rec is not None:
        t.extra.append(rec)
    return t


def _recovery_table(name: str, jobs: list[Job], keys: list[str], labels: dict[str, str]) -> Table | None:
    """Recovery ratios of the unlearned rows (pipeline.recovery): how much of what unlearning
    removed came back at each quantized precision; "undefined" where it has no value."""
    quantized = [q for q in labels if q != "none"]
    rows = [j for j in jobs if j.results and "recovery" in j.results]
    if not quantized or not rows:
        return None
    columns = [("", _key_name(k)) for k in keys]
    columns += [(labels[q], f"{m} recovery") for q in quantized for m in ("M2", "M1")]
    t = Table(f"{name}_recovery", "Recovery ratio: (unlearned at q − unlearned at full) / "
              "(target at q − unlearned at full); 1 = all of it came back, 0 = none",
              columns, ["text"] * len(keys) + ["ratio"] * (2 * len(quantized)))
    for job in rows:
        cells = []
        for q in quantized:
            r = job.results["recovery"].get(q, {})
            cells += [r.get(k) if r.get(k) is not None else "undefined" for k in ("knowmem_f", "verbmem_f")]
        t.rows.append([job.keys.get(k) for k in keys] + cells)
    return t


def _quant_descriptions(jobs: list[Job], sweep_cfg: DictConfig, labels: dict[str, str]) -> dict[str, str]:
    out = {}
    for q in labels:
        for cfg in [j.config for j in jobs if j.config is not None] + [sweep_cfg]:
            node = (cfg.get("quant") or {}).get(q)
            if node is not None:
                parts = [q] + [f"{k} {node[k]}" for k in ("quant_type", "group_size", "symmetric") if k in node]
                out[q] = parts[0] + (f" ({', '.join(parts[1:])})" if parts[1:] else "")
                break
    return out


def _published_table(corpus: str, reasons: list[str]) -> Table:
    pub = PUBLISHED[corpus]
    why = "; ".join(reasons) or "no run of this sweep used that setting"
    t = Table(f"published_{corpus}",
              f"{pub['source']} published, {pub['model']} on {pub['dataset']}: NOT comparable to the rows above ({why})",
              [("", "method"), ("", "precision")] + [("", m + arrow) for _, m, _, arrow in MUSE_METRICS],
              ["text", "text"] + ["num"] * 4)
    for (method, precision), vals in pub["rows"].items():
        t.rows.append([method, precision, *vals])
    return t


def bucket_table(name: str, report: dict, jobs: list[Job], sweep_cfg: DictConfig) -> Table:
    keys, show = list(jobs[0].keys) if jobs else [], dict(report["show"])
    columns = ([("", _key_name(k)) for k in keys] + [("", h) for h in show]
               + [("", "quantizer"), ("", "status")] + [("", h) for _, h, _ in BUCKET_STATS])
    formats = ["text"] * (len(keys) + len(show) + 2) + [u for _, _, u in BUCKET_STATS]
    t = Table(name, report["title"], columns, formats)
    for job in jobs:
        head = _label_cells(job, keys, show)
        analysis = (job.results or {}).get("analysis")
        if job.status not in ("ok", "partial") or not analysis:
            t.notes += _failure_note(job)
            status = job.status_text() if job.status not in ("ok", "partial") else "no analysis (not unlearned)"
            t.rows.append(head + [None, status] + [None] * len(BUCKET_STATS))
            continue
        for q, stats in analysis.items():
            if stats.get("status") == "failed":
                t.rows.append(head + [q, f"failed: {stats.get('error')}"] + [None] * len(BUCKET_STATS))
                continue
            t.rows.append(head + [q, "ok"] + [stats.get(k) * (100 if u == "pct" else 1) if stats.get(k) is not None
                                              else None for k, _, u in BUCKET_STATS])
    t.notes.append("Δ: the quantization step of the TARGET's weights (per group/block); |Δw|: unlearned − target; "
                   "bucket overlap: share of weights whose quantized code is unchanged; value overlap: share whose "
                   "dequantized value is unchanged (scale changes included); logit shift: mean "
                   "distance between the unlearned and target logits on forget text (quail_repro/analysis.py).")
    return t


#: recovery columns per quantized precision: (header, how to read it from a job's results, format)
RECOVERY_COLUMNS = [
    ("M2", lambda r, q: ((r.get("metrics") or {}).get(q) or {}).get("knowmem_f"), "num"),
    ("M2 recovery", lambda r, q: ((r.get("recovery") or {}).get(q) or {}).get("knowmem_f"), "ratio"),
    ("M1 recovery", lambda r, q: ((r.get("recovery") or {}).get(q) or {}).get("verbmem_f"), "ratio"),
    ("median |Δw|/Δ", lambda r, q: _dw_over_step(((r.get("analysis") or {}).get(q) or {})), "sci"),
    ("overlap (%)", lambda r, q: _pct(((r.get("analysis") or {}).get(q) or {}).get("bucket_overlap")), "pct"),
    ("transfer coef.", lambda r, q: ((r.get("analysis") or {}).get(q) or {}).get("transfer_coef"), "ratio"),
]


def _dw_over_step(stats: dict) -> float | None:
    if stats.get("median_abs_dw") is None or not stats.get("median_step"):
        return None
    return stats["median_abs_dw"] / stats["median_step"]


def _pct(v: float | None) -> float | None:
    return None if v is None else 100 * v


def recovery_table(name: str, report: dict, jobs: list[Job], sweep_cfg: DictConfig) -> Table:
    """One row per setting: full-precision M2/M4, then per quantized precision M2, the recovery
    ratios, median |dw| over the median step, bucket overlap and the update transfer coefficient."""
    keys, show = list(jobs[0].keys) if jobs else [], dict(report["show"])
    labels = precision_labels(jobs, sweep_cfg)
    quantized = [q for q in labels if q != "none"]
    columns = ([("", _key_name(k)) for k in keys] + [("", h) for h in show] + [("", "status")]
               + [("full", "M2↓"), ("full", "M4↑")] + [(labels[q], h) for q in quantized for h, _, _ in RECOVERY_COLUMNS])
    formats = (["text"] * (len(keys) + len(show) + 1) + ["num", "num"]
               + [f for _ in quantized for _, _, f in RECOVERY_COLUMNS])
    t = Table(name, report["title"], columns, formats)
    for job in jobs:
        head = _label_cells(job, keys, show) + [job.status_text()]
        if job.status not in ("ok", "partial"):
            t.notes += _failure_note(job)
            t.rows.append(head + [None] * (len(columns) - len(head)))
            continue
        full = (job.results.get("metrics") or {}).get("none") or {}
        t.rows.append(head + [full.get("knowmem_f"), full.get("knowmem_r")]
                      + [get(job.results, q) for q in quantized for _, get, _ in RECOVERY_COLUMNS])
    t.notes.append("Recovery: (unlearned at q − unlearned at full) / (target at q − unlearned at full); 1 = all "
                   "that unlearning removed came back, 0 = none, — = undefined. |Δw|/Δ: median |unlearned − target| "
                   "over the median quantization step of the target; transfer coef.: <Q(w_u) − Q(w_t), Δw> / <Δw, Δw>.")
    return t


LAYOUTS = {"muse": muse_table, "buckets": bucket_table, "recovery": recovery_table}


# -- rendering ----------------------------------------------------------------------------


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "—"
    if kind == "text" and isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str) or kind == "text":
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if kind == "sci":
        return f"{value:.2e}"
    if kind in ("pct", "ratio"):
        return f"{value:.2f}"
    return f"{value:.1f}"


def to_markdown(t: Table) -> str:
    def esc(s: str) -> str:  # a bare | would end the cell ("|Δw|")
        return s.replace("|", "\\|")

    headers = [esc(h) for h in t.headers]
    cells = [[esc(_fmt(v, f)) for v, f in zip(row, t.formats)] for row in t.rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(parts):
        return "| " + " | ".join(p.ljust(w) for p, w in zip(parts, widths)) + " |"

    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells]
    return "\n".join(out)


def render_markdown(t: Table) -> str:
    parts = [f"## {t.name}" + (f": {t.title}" if t.title else ""), "", to_markdown(t), ""]
    parts += [f"- {n}" for n in t.notes]
    for x in t.extra:
        parts += ["", f"### {x.title}", "", to_markdown(x)]
    return "\n".join(parts).rstrip() + "\n"


def render_csv(t: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(t.headers)
    for row in t.rows:
        w.writerow(["" if v is None else v for v in row])
    return buf.getvalue()


_TEX = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "~": r"\textasciitilde{}", "^": r"\^{}", "\\": r"\textbackslash{}",
        "↓": r"$\downarrow$", "↑": r"$\uparrow$", "→": r"$\rightarrow$", "Δ": r"$\Delta$", "−": "$-$"}


def _tex(s: str) -> str:
    return "".join(_TEX.get(c, c) for c in s)


def to_latex(t: Table) -> str:
    align = "".join("l" if f == "text" else "r" for f in t.formats)
    lines = [r"\begin{tabular}{" + align + "}", r"\toprule"]
    if any(g for g, _ in t.columns):  # a header row of column groups (precisions)
        head, rules, col = [], [], 1
        for g, run in itertools.groupby(t.columns, key=lambda c: c[0]):
            n = len(list(run))
            head.append(rf"\multicolumn{{{n}}}{{c}}{{{_tex(g)}}}" if g else " & ".join([""] * n))
            if g:
                rules.append(rf"\cmidrule(lr){{{col}-{col + n - 1}}}")
            col += n
        lines += [" & ".join(head) + r" \\", " ".join(rules)]
    lines.append(" & ".join(_tex(n) for _, n in t.columns) + r" \\")
    lines.append(r"\midrule")
    for row in t.rows:
        lines.append(" & ".join(_tex(_fmt(v, f)) for v, f in zip(row, t.formats)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def render_latex(t: Table) -> str:
    """A booktabs table (\\usepackage{booktabs,graphicx}); notes follow as a footnote-size paragraph."""
    out = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(t.name + (': ' + t.title if t.title else ''))}}}",
           rf"\label{{tab:{t.name}}}", r"\resizebox{\linewidth}{!}{%", to_latex(t) + "}"]
    if t.notes:
        out.append(r"\par\footnotesize " + " ".join(_tex(n) for n in t.notes))
    out.append(r"\end{table}")
    for x in t.extra:
        out += ["", r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(x.title)}}}",
                r"\resizebox{\linewidth}{!}{%", to_latex(x) + "}", r"\end{table}"]
    return "\n".join(out) + "\n"


# -- figures ------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars(groups: list[str], series: dict[str, list[float | None]], ylabel: str, path: Path, fmt: str) -> Path | None:
    """Grouped bars with their values on top: one group per row label, one bar per series (None: no bar).

    Rows with no value in any series are left out.
    """
    keep = [i for i in range(len(groups)) if any(vs[i] is not None for vs in series.values())]
    if not keep:
        return None
    groups, series = [groups[i] for i in keep], {k: [vs[i] for i in keep] for k, vs in series.items()}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(groups) * max(1, len(series))), 4))
    width = 0.8 / max(1, len(series))
    for i, (label, vs) in enumerate(series.items()):
        xs = [g + i * width for g, v in enumerate(vs) if v is not None]
        bars = ax.bar(xs, [v for v in vs if v is not None], width, label=label)
        ax.bar_label(bars, fmt=fmt, fontsize=6, rotation=90, padding=2)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups, rotation=45, ha="right", fontsize=8)
    ax.margins(y=0.15)  # room for the labels
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _recovery_scatter(jobs: list[Job], path: Path) -> Path | None:
    """M2 recovery against median |dw|/step and against the transfer coefficient, one colour per quantizer."""
    labels = precision_labels(jobs, OmegaConf.create({}))
    points = {q: [(_dw_over_step(j.results["analysis"][q]), j.results["analysis"][q].get("transfer_coef"),
                   j.results["recovery"][q]["knowmem_f"])
                  for j in jobs if q in (j.results.get("analysis") or {}) and q in (j.results.get("recovery") or {})
                  and j.results["recovery"][q].get("knowmem_f") is not None]
              for q in labels if q != "none"}
    if not any(points.values()):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for q, pts in points.items():
        if pts:
            axes[0].scatter([p[0] for p in pts], [p[2] for p in pts], label=labels[q])
            axes[1].scatter([p[1] for p in pts], [p[2] for p in pts], label=labels[q])
    axes[0].set_xscale("log")
    axes[0].set_xlabel("median |Δw| / median quantization step")
    axes[1].set_xlabel("update transfer coefficient")
    axes[0].set_ylabel("KnowMem-forget recovery ratio")
    for ax in axes:
        ax.axhline(0, color="grey", lw=0.5)
        ax.axhline(1, color="grey", lw=0.5, ls="--")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def figure(t: Table, report: dict, jobs: list[Job], path: Path) -> Path | None:
    """buckets: bucket overlap per row and quantizer; recovery: recovery against |dw|/step and the
    transfer coefficient; muse: the report.figure metric per row and precision."""
    ok = [j for j in jobs if j.status in ("ok", "partial")]
    groups = [" ".join(j.keys.values()) for j in ok]
    if report["layout"] == "recovery":
        return _recovery_scatter(ok, path)
    if report["layout"] == "buckets":
        quants = list(dict.fromkeys(q for j in ok for q in (j.results.get("analysis") or {})))
        series = {q: [((j.results.get("analysis") or {}).get(q) or {}).get("bucket_overlap") for j in ok]
                  for q in quants}
        series = {q: [None if v is None else 100 * v for v in vs] for q, vs in series.items()}
        return _bars(groups, series, "bucket overlap (% same code)", path, fmt="%.2f")
    metric = report["figure"]
    name = next((f"{m} {what} ({arrow})" for k, m, what, arrow in MUSE_METRICS if k == metric), metric)
    labels = precision_labels(jobs, OmegaConf.create({}))
    series = {labels[q]: [((j.results.get("metrics") or {}).get(q) or {}).get(metric) for j in ok] for q in labels}
    series = {q: [v if isinstance(v, (int, float)) else None for v in vs] for q, vs in series.items()}
    return _bars(groups, series, name, path, fmt="%.1f")


# -- build --------------------------------------------------------------------------------


@dataclass
class Report:
    name: str
    table: Table
    files: list[Path]
    text: str  # what the terminal shows
    jobs: list[Job]


def report_settings(sweep_cfg: DictConfig) -> dict:
    settings = dict(DEFAULT_REPORT)
    settings.update(OmegaConf.to_container(sweep_cfg.get("report") or OmegaConf.create({}), resolve=True))
    if settings["layout"] not in LAYOUTS:
        raise ValueError(f"report.layout={settings['layout']!r}: choose one of {sorted(LAYOUTS)}")
    unknown = [c for c in settings["published"] if c not in PUBLISHED]
    if unknown:
        raise ValueError(f"report.published={unknown}: choose among {sorted(PUBLISHED)}")
    return settings


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def build(sweep_dir: str | Path, *, figures: bool = True) -> Report:
    """Read the sweep's run folders and write NAME.md/.csv/.tex (and NAME.png) into the sweep folder."""
    sweep_dir = Path(sweep_dir)
    sweep_cfg, jobs, notes = collect(sweep_dir)
    report = report_settings(sweep_cfg)
    name = report["name"]
    table = LAYOUTS[report["layout"]](name, report, jobs, sweep_cfg)
    if report["claim"]:
        table.notes.insert(0, f"Claim tested: {report['claim']}")
    done = sum(j.results is not None for j in jobs)
    absent = [f"{' '.join(j.keys.values())} ({j.status})" for j in jobs if j.results is None]
    table.notes.append(f"{done} of {len(jobs)} jobs finished" + (f"; no results yet: {', '.join(absent)}" if absent else "")
                       + f". Sweep folder: {sweep_dir}.")
    table.notes += notes
    files = [_write(sweep_dir / f"{name}.md", render_markdown(table)),
             _write(sweep_dir / f"{name}.csv", render_csv(table)),
             _write(sweep_dir / f"{name}.tex", render_latex(table))]
    if figures:
        png = figure(table, report, jobs, sweep_dir / f"{name}.png")
        if png is not None:
            files.append(png)
    return Report(name, table, files, render_markdown(table), jobs)


def log_to_tracker(rep: Report, sweep_dir: Path, logger_cfg: DictConfig) -> str:
    """The assembled table as a W&B Table and the files as an artifact, in one run of the sweep's group."""
    from hydra.utils import instantiate

    from quail_repro.loggers import sweep_group

    group = logger_cfg.get("group") or sweep_group(rep.name, sweep_dir)
    logger = instantiate(logger_cfg, job_type="report", group=group, run_name=f"{rep.name}-table")
    logger.start({"report": rep.name, "sweep_dir": str(Path(sweep_dir).resolve()), "jobs": len(rep.jobs),
                  "finished": sum(j.results is not None for j in rep.jobs),
                  "hydra": {"mode": "MULTIRUN", "sweep_dir": str(sweep_dir)}}, str(sweep_dir))
    logger.log_table(rep.name, rep.table.headers, rep.table.rows)
    png = [f for f in rep.files if f.suffix == ".png"]
    if png:
        logger.log_images({f"{rep.name}/figure": png[0]})
    logger.log_artifact(group, "table", rep.files)
    logger.finish({"status": "ok"})
    return logger.sync_hint()


class TableCallback(Callback):
    """Hydra callback: the table kept current after each job, and reported at the sweep's end.

    (A failing job's results.json is written by pipeline.run itself, whatever the error.)
    """

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        mode = OmegaConf.select(config, "hydra.mode")
        if getattr(mode, "name", mode) == "MULTIRUN":  # keep the files current: a stopped sweep still has a table
            try:
                build(config.hydra.sweep.dir, figures=False)
            except Exception as e:  # never let the report break a job
                log.warning("could not update the sweep table: %s", e)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rep = build(sweep_dir)
        print(f"\n{rep.text}\nwritten: {', '.join(str(f) for f in rep.files)}")
        try:
            hint = log_to_tracker(rep, sweep_dir, config.logger)
        except Exception as e:  # the files are written; a tracker problem must not hide them
            log.error("could not log the table to the experiment tracker: %s", e)
            return
        if hint:
            print(hint)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quail_repro.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder (the one with multirun.yaml)")
    parser.add_argument("--wandb", action="store_true",
                        help="also log the table to the sweep's W&B group (with the sweep's logger settings)")
    args = parser.parse_args(argv)
    try:
        rep = build(args.sweep_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(rep.text)
    print("written: " + ", ".join(str(f) for f in rep.files))
    if args.wandb:
        sweep_cfg = OmegaConf.load(args.sweep_dir / "multirun.yaml")
        print(log_to_tracker(rep, args.sweep_dir, sweep_cfg.logger))
    return 0


if __name__ == "__main__":
    sys.exit(main())
