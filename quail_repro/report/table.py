"""The table every layout builds and every renderer reads, and the parts the layouts share
(row labels, notes on failed and hinge-inactive jobs)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from quail_repro.report.sweep import Job, Row


@dataclass
class Table:
    """Columns are (group, name) pairs; a cell is a number (in display units), a Spread over
    seeds, a string or None."""
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


def key_name(key: str) -> str:
    """A swept key as a column header: ``+experiment/quail_ablation`` -> ``quail_ablation``."""
    return key.lstrip("+").split("/")[-1].split(".")[-1]


def label_columns(keys: list[str], show: dict[str, str]) -> list[tuple[str, str]]:
    """The columns that say what a row is: the swept keys, then the report's ``show`` values."""
    return [("", key_name(k)) for k in keys] + [("", h) for h in show]


def label_cells(row: Row, keys: list[str], show: dict[str, str]) -> list[Any]:
    return [row.keys.get(k) for k in keys] + [row.get(path) for path in show.values()]


def job_notes(row: Row, jobs: list[Job]) -> list[str]:
    """What went wrong in the row's jobs, and why a QUAIL row may show no numbers."""
    return [note for job in row.jobs for note in job.failure_note()] + hinge_note(row, jobs)


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


def hinge_note(row: Row, jobs: list[Job]) -> list[str]:
    """Why a QUAIL row has no numbers of its own (for some or all of its seeds)."""
    inactive = [j for j in row.jobs if j.hinge_inactive]
    if not inactive:
        return []
    job = inactive[0]
    who = row.label + (f" ({', '.join(f'seed={j.seed}' for j in inactive)})" if row.seeded else "")
    base = base_method(job, jobs)
    m = job.config.method
    loss = " + ".join(n._target_.rsplit(".", 1)[-1] for n in (m.loss, m.get("retain")) if n is not None)
    where = f"the {base} row has them" if base else f"its base method, loss {loss}, is not in this sweep"
    return [f"{who}: QUAIL's hinge was never active (0 of {job.results.unlearning.steps} steps), so its model is "
            f"its base method's, bit for bit, and so are its numbers ({where})."]
