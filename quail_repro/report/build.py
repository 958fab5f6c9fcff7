"""A sweep folder in, its table files out: settings, layout, notes, files."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from quail_repro.report.buckets import bucket_table
from quail_repro.report.classification import classification_table
from quail_repro.report.figures import figure
from quail_repro.report.leverage import leverage_table
from quail_repro.report.muse import muse_table
from quail_repro.report.published import load_published
from quail_repro.report.recovery import recovery_table
from quail_repro.report.render import render_csv, render_latex, render_markdown
from quail_repro.report.scale import scale_table
from quail_repro.report.sweep import Job, Sweep, collect, resolved_config
from quail_repro.report.table import Table

LAYOUTS = {"muse": muse_table, "buckets": bucket_table, "recovery": recovery_table, "scale": scale_table,
           "classification": classification_table,
           "leverage": leverage_table}
DEFAULT_REPORT = {"name": "sweep", "title": "", "claim": "", "layout": "muse", "show": {}, "published": [],
                  "figure": "knowmem_f"}


@dataclass
class Report:
    name: str
    table: Table
    files: list[Path]
    text: str  # what the terminal shows
    jobs: list[Job]


def report_settings(sweep_cfg: DictConfig) -> dict:
    """The sweep's ``report`` settings over the defaults, checked."""
    settings = dict(DEFAULT_REPORT)
    settings.update(OmegaConf.to_container(sweep_cfg.get("report") or OmegaConf.create({}), resolve=True))
    if settings["layout"] not in LAYOUTS:
        raise ValueError(f"report.layout={settings['layout']!r}: choose one of {sorted(LAYOUTS)}")
    unknown = [c for c in settings["published"] if c not in load_published()]
    if unknown:
        raise ValueError(f"report.published={unknown}: choose among {sorted(load_published())}")
    return settings


#: what a seed setting other than ``seed`` makes (its dotted key ends in ``.seed``)
SEEDED = {"dataset.generator.seed": "the corpus", "model.train.seed": "target and retrain",
          "model.base.train.seed": "the base model", "method.seed": "the unlearning run"}


def held_fixed(sweep: Sweep) -> list[str]:
    """The seed settings that do not vary with the swept seed in some row: the models (or data) that
    row holds fixed across its seeds, as ``key=value (what it makes)``."""
    fixed = {}
    for row in sweep.rows:
        configs = [c for c in map(resolved_config, row.jobs) if c is not None]
        if len(configs) < 2:
            continue
        for key in _seed_keys(configs[0]):
            values = {json.dumps(_select(c, key)) for c in configs}
            if len(values) == 1:
                fixed[key] = values.pop()
    return [f"{k}={v} ({SEEDED.get(k, k.rsplit('.', 1)[0])})" for k, v in sorted(fixed.items())]


def _seed_keys(node, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return []
    keys = [f"{prefix}{k}" for k, v in node.items() if k == "seed" and prefix and not isinstance(v, dict)]
    for k, v in node.items():
        if isinstance(v, dict) and not k.startswith("hydra"):
            keys += _seed_keys(v, f"{prefix}{k}.")
    return keys


def _select(config: dict, dotted: str):
    for part in dotted.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def seeds_note(sweep: Sweep) -> str:
    per_row = ", ".join(f"{row.label} {len(row.shown)} of {len(row.jobs)}" for row in sweep.rows)
    fixed = held_fixed(sweep)
    return (f"Over seeds {', '.join(sweep.seeds)}: a cell is the mean ± sample sd (ddof 1) over the n seeds with a "
            "value, and counts the seeds without one (failed, missing ...); a recovery ratio is the pooled ratio "
            "over every seed's items (the estimator its interval is of), with a 95% bootstrap interval over seeds "
            "and source documents (a town's questions, a claim's posts are resampled together) and the per-seed "
            "ratios beside it, where the runs kept per-item scores. "
            + (f"Held fixed across the seeds, deliberately: {'; '.join(fixed)}. " if fixed else "")
            + f"Seeds with results per row: {per_row}.")


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")  # a reader never sees half a file
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def build(sweep_dir: str | Path, *, figures: bool = True) -> Report:
    """Read the sweep's run folders and write NAME.md/.csv/.tex (and NAME.png) into the sweep folder."""
    sweep_dir = Path(sweep_dir)
    sweep = collect(sweep_dir)
    report = report_settings(sweep.config)
    name = report["name"]
    table = LAYOUTS[report["layout"]](name, report, sweep)
    if report["claim"]:
        table.notes.insert(0, f"Claim tested: {report['claim']}")
    if sweep.seeds:
        table.notes.append(seeds_note(sweep))
    jobs = sweep.jobs
    done = sum(j.results is not None for j in jobs)
    absent = [f"{j.label} ({j.status})" for j in jobs if j.results is None]
    table.notes.append(f"{done} of {len(jobs)} jobs finished" + (f"; no results yet: {', '.join(absent)}" if absent else "")
                       + f". Sweep folder: {sweep_dir}.")
    table.notes += sweep.notes
    markdown = render_markdown(table)
    files = [_write(sweep_dir / f"{name}.md", markdown),
             _write(sweep_dir / f"{name}.csv", render_csv(table)),
             _write(sweep_dir / f"{name}.tex", render_latex(table))]
    if figures:
        png = figure(report, sweep, sweep_dir / f"{name}.png")
        if png is not None:
            files.append(png)
    return Report(name, table, files, markdown, jobs)
