"""Recovery under quantization: the ``recovery`` layout (one row per setting, with the bucket
statistics that might explain it), and the recovery-ratio table under every MUSE table."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

from quail_repro.report.cells import Spread
from quail_repro.report.sweep import Row, Sweep, precision_labels
from quail_repro.report.table import Table, job_notes, key_name, label_cells, label_columns
from quail_repro.results import Results
from quail_repro.recovery import pooled_recovery, recovery_interval

HINGE_INACTIVE = "= base (hinge inactive)"


class Column(NamedTuple):
    header: str
    source: str  # metric | recovery | analysis: the Results field it is read from
    key: str
    format: str  # pct: stored as a fraction, shown in percent


#: the columns of each quantized precision in the recovery layout
RECOVERY_COLUMNS = (
    Column("M2", "metric", "knowmem_f", "num"),
    Column("M2 recovery", "recovery", "knowmem_f", "ratio"),
    Column("M1 recovery", "recovery", "verbmem_f", "ratio"),
    Column("median |Δw|/Δ", "analysis", "median_dw_per_step", "sci"),
    Column("overlap (%)", "analysis", "bucket_overlap", "pct"),
    Column("transfer coef.", "analysis", "transfer_coef", "ratio"),
)
#: full precision, once per row
FULL_COLUMNS = (Column("M2↓", "metric", "knowmem_f", "num"), Column("M4↑", "metric", "knowmem_r", "num"))
#: the recovery-ratio table under a MUSE table
RATIO_COLUMNS = (Column("M2 recovery", "recovery", "knowmem_f", "ratio"),
                 Column("M1 recovery", "recovery", "verbmem_f", "ratio"))


def median_dw_per_step(results: Results, precision: str) -> float | None:
    """Median |unlearned − target| over the median quantization step of the target."""
    dw, step = results.analysis_of(precision, "median_abs_dw"), results.analysis_of(precision, "median_step")
    return None if dw is None or not step else dw / step


def analysis_value(results: Results, precision: str, key: str) -> Any:
    """An analysis statistic; a dotted key reaches into a nested one (``by_code.zero.transfer_coef``)."""
    head, *rest = key.split(".")
    value = results.analysis_of(precision, head)
    for part in rest:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def read(column: Column, results: Results, precision: str) -> Any:
    if column.source == "metric":
        return results.metric(precision, column.key)
    if column.source == "recovery":
        return results.recovery_of(precision, column.key)
    value = (median_dw_per_step(results, precision) if column.key == "median_dw_per_step"
             else analysis_value(results, precision, column.key))
    return 100 * value if column.format == "pct" and value is not None else value


def cell(row: Row, column: Column, precision: str) -> Any:
    """The row's value of a column; over seeds, a recovery ratio is the pooled ratio over every seed's
    items (quail_repro.recovery) with its 95% bootstrap interval over seeds and source documents, the
    per-seed ratios beside it, when every seed kept its per-item scores."""
    value = row.cell(lambda results: read(column, results, precision))
    if column.source != "recovery" or not isinstance(value, Spread):
        return value
    items = [j.results.recovery_items.get(precision, {}).get(column.key) for j in row.shown]
    if not items or not all(items):
        return value
    return replace(value, pooled=True, point=pooled_recovery(items), interval=recovery_interval(items))


def recovery_table(name: str, report: dict, sweep: Sweep) -> Table:
    """One row per setting: full-precision M2/M4, then per quantized precision M2, the recovery
    ratios, median |dw| over the median step, bucket overlap and the update transfer coefficient."""
    t = per_precision_table(name, report, sweep, RECOVERY_COLUMNS)
    t.notes.append("Recovery: (unlearned at q − unlearned at full) / (target at q − unlearned at full); 1 = all "
                   "that unlearning removed came back, 0 = none, — = undefined. |Δw|/Δ: median |unlearned − target| "
                   "over the median quantization step of the target; transfer coef.: <Q(w_u) − Q(w_t), Δw> / <Δw, Δw>.")
    return t


def per_precision_table(name: str, report: dict, sweep: Sweep, precision_columns: tuple[Column, ...]) -> Table:
    """One row per setting: full-precision M2/M4, then ``precision_columns`` for each quantized precision."""
    keys, show = sweep.keys, dict(report["show"])
    labels = precision_labels(sweep.jobs, sweep.config)
    quantized = [q for q in labels if q != "none"]
    per_precision = [("none", c) for c in FULL_COLUMNS] + [(q, c) for q in quantized for c in precision_columns]
    columns = (label_columns(keys, show) + [("", "status")]
               + [(labels.get(q, "full"), c.header) for q, c in per_precision])
    formats = ["text"] * (len(keys) + len(show) + 1) + [c.format for _, c in per_precision]
    t = Table(name, report["title"], columns, formats)
    for row in sweep.rows:
        t.rows.append(label_cells(row, keys, show) + [row.status_text()] + [cell(row, c, q) for q, c in per_precision])
        t.notes += job_notes(row, sweep.jobs)
    return t


def ratio_table(name: str, sweep: Sweep, labels: dict[str, str], columns: tuple[Column, ...] = RATIO_COLUMNS,
                of: str = "") -> Table | None:
    """Recovery ratios of the unlearned rows (recovery.row_recovery): how much of what unlearning
    removed (``of`` names the metric when there is one) came back at each quantized precision;
    "undefined" where it has no value."""
    quantized = [q for q in labels if q != "none"]
    unlearned = [row for row in sweep.rows
                 if any((j.shows_numbers or j.hinge_inactive) and j.results.recovery for j in row.jobs)]
    if not quantized or not unlearned:
        return None
    keys = sweep.keys
    headers = [("", key_name(k)) for k in keys] + [(labels[q], c.header) for q in quantized for c in columns]
    t = Table(f"{name}_recovery", f"Recovery ratio{of}: (unlearned at q − unlearned at full) / "
              "(target at q − unlearned at full); 1 = all of it came back, 0 = none",
              headers, ["text"] * len(keys) + [c.format for _ in quantized for c in columns])
    for row in unlearned:
        if not row.seeded and row.jobs[0].hinge_inactive:
            cells = [HINGE_INACTIVE] * (len(headers) - len(keys))
        else:
            cells = [cell(row, c, q) for q in quantized for c in columns]
            cells = ["undefined" if v is None else v for v in cells]
        t.rows.append([row.keys.get(k) for k in keys] + cells)
    return t
