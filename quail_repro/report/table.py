"""The table every layout builds and every renderer reads, and the parts the layouts share
(row labels, notes on failed and hinge-inactive jobs)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from quail_repro.report.cells import Spread
from quail_repro.report.sweep import Job, Row, Sweep


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


def steps_table(name: str, sweep: Sweep) -> Table | None:
    """How long each unlearned row ran: its steps, how many seeds the early stop ended, and for a
    QUAIL row the steps whose hinge acted (a row whose hinge never acted included: its steps say
    why it shows no numbers). Under the main table, so its columns stay where reports read them."""
    rows = [row for row in sweep.rows if any(j.results and j.results.unlearning and j.results.unlearning.steps
                                             is not None for j in row.jobs)]
    if not rows:
        return None
    hinge = any(j.results.unlearning.hinge_active_steps is not None for row in rows for j in row.jobs
                if j.results and j.results.unlearning)
    keys = sweep.keys
    columns = [("", key_name(k)) for k in keys] + [("", "steps"), ("", "stopped early")]
    formats = ["text"] * len(keys) + ["num", "text"]
    if hinge:
        columns.append(("", "hinge active steps"))
        formats.append("num")
    t = Table(f"{name}_steps", "Unlearning steps per row (mean ± sd over seeds); stopped early: seeds whose "
              "method.early_stop criterion ended the run before its cap", columns, formats)

    def over_seeds(values: list, seeded: bool) -> Any:
        values = [float(v) for v in values if v is not None]
        if not values:
            return None
        return Spread(tuple(values)) if seeded else values[0]

    for row in rows:
        runs = [j.results.unlearning for j in row.jobs if j.results and j.results.unlearning]
        stopped = [u.stopped_early for u in runs if u.stopped_early is not None]
        cells = [row.keys.get(k) for k in keys] + [over_seeds([u.steps for u in runs], row.seeded),
                                                    f"{sum(stopped)} of {len(stopped)}" if stopped else "no stop set"]
        if hinge:
            cells.append(over_seeds([u.hinge_active_steps for u in runs], row.seeded))
        t.rows.append(cells)
    return t
