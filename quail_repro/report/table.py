"""The table every layout builds and every renderer reads, how a cell is shown, and the parts
the layouts share (row labels, notes on failed and hinge-inactive jobs)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from quail_repro.report.sweep import Job


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


def fmt(value: Any, kind: str) -> str:
    """A cell as text: numbers by their column's format, None as —."""
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


def key_name(key: str) -> str:
    """A swept key as a column header: ``+experiment/quail_ablation`` -> ``quail_ablation``."""
    return key.lstrip("+").split("/")[-1].split(".")[-1]


def label_columns(keys: list[str], show: dict[str, str]) -> list[tuple[str, str]]:
    """The columns that say what a row is: the swept keys, then the report's ``show`` values."""
    return [("", key_name(k)) for k in keys] + [("", h) for h in show]


def label_cells(job: Job, keys: list[str], show: dict[str, str]) -> list[Any]:
    return [job.keys.get(k) for k in keys] + [job.get(path) for path in show.values()]


def base_method(job: Job, jobs: list[Job]) -> str | None:
    """The method of the sweep whose config is ``job``'s without QUAIL's hinge: its base method."""
    def without_hinge(j: Job) -> dict:
        method = OmegaConf.to_container(j.config.method, resolve=False)
        return {k: v for k, v in method.items() if k not in ("name", "hinge", "auto_margin")}

    if job.config is None:
        return None
    mine = without_hinge(job)
    return next((j.config.method.name for j in jobs if j is not job and j.config is not None
                 and "hinge" not in j.config.method and without_hinge(j) == mine), None)


def hinge_note(job: Job, jobs: list[Job]) -> list[str]:
    """Why a QUAIL row has no numbers of its own."""
    if not job.hinge_inactive:
        return []
    base = base_method(job, jobs)
    steps = job.results.unlearning.steps
    loss = job.config.method.loss._target_.rsplit(".", 1)[-1]
    where = f"the {base} row has them" if base else f"its base method, loss {loss}, is not in this sweep"
    return [f"{job.label}: QUAIL's hinge was never active (0 of {steps} steps), so its model is its base "
            f"method's, bit for bit, and so are its numbers ({where})."]
