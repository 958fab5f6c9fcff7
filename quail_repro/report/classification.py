"""The ``classification`` layout (+experiment=table4): accuracy on forget / retain / test, macro-F1
on test, the membership-inference AUC (and, for poisoning, accuracy on the poisoned posts under
their true labels) at each precision of ``quant``; the recovery ratio of acc-forget below."""
from __future__ import annotations

from functools import partial

from quail_repro.report.muse import muse_value, precision_notes
from quail_repro.report.recovery import HINGE_INACTIVE, Column, cell
from quail_repro.report.sweep import Sweep, precision_labels, quant_descriptions
from quail_repro.report.table import Table, job_notes, key_name, label_cells, label_columns
from quail_repro.results import CLASSIFICATION_METRICS

RATIO = Column("acc-f recovery", "recovery", "acc_forget", "ratio")


def _metrics(sweep: Sweep):
    """The table's metrics: acc-p only when some run has poisoned posts."""
    poisoned = any(j.results is not None and any(m.ok and m.acc_poison_true is not None
                                                 for m in j.results.metrics.values()) for j in sweep.jobs)
    return [m for m in CLASSIFICATION_METRICS if m.key != "acc_poison_true" or poisoned]


def classification_table(name: str, report: dict, sweep: Sweep) -> Table:
    keys, show = sweep.keys, dict(report["show"])
    labels = precision_labels(sweep.jobs, sweep.config)
    metrics = _metrics(sweep)
    columns = label_columns(keys, show) + [("", "status")]
    columns += [(labels[q], m.paper + m.better) for q in labels for m in metrics]
    formats = ["text"] * (len(keys) + len(show) + 1) + [("ratio" if m.key == "mia_auc" else "num")
                                                         for _ in labels for m in metrics]
    t = Table(name, report["title"], columns, formats)
    for row in sweep.rows:
        cells = [row.cell(partial(muse_value, precision=q, key=m.key)) for q in labels for m in metrics]
        t.rows.append(label_cells(row, keys, show) + [row.status_text()] + cells)
        t.notes += [note for job in row.jobs for note in precision_notes(job)] + job_notes(row, sweep.jobs)
    t.notes.insert(0, "; ".join(f"{m.paper} {m.what} ({m.better})" for m in metrics)
                   + ". Accuracy and F1 in %, F1 macro-averaged over the classes; MIA is the ROC AUC of −loss, forget "
                     "posts (members) against test posts (0.5: indistinguishable; compare with the retrain row's).")
    descriptions = quant_descriptions(sweep.jobs, sweep.config, labels)
    if descriptions:
        t.notes.insert(1, "Columns: " + "; ".join(f"{labels[q]} = {d}" for q, d in descriptions.items()) + ".")
    ratios = ratio_table(name, sweep, labels)
    if ratios is not None:
        t.extra.append(ratios)
    return t


def ratio_table(name: str, sweep: Sweep, labels: dict[str, str]) -> Table | None:
    """acc-forget recovery of the unlearned rows at each quantized precision."""
    quantized = [q for q in labels if q != "none"]
    unlearned = [row for row in sweep.rows
                 if any((j.shows_numbers or j.hinge_inactive) and j.results.recovery for j in row.jobs)]
    if not quantized or not unlearned:
        return None
    keys = sweep.keys
    t = Table(f"{name}_recovery", "Recovery ratio of acc-forget: (unlearned at q − unlearned at full) / "
              "(target at q − unlearned at full); 1 = all of it came back, 0 = none",
              [("", key_name(k)) for k in keys] + [(labels[q], RATIO.header) for q in quantized],
              ["text"] * len(keys) + ["ratio"] * len(quantized))
    for row in unlearned:
        if not row.seeded and row.jobs[0].hinge_inactive:
            cells = [HINGE_INACTIVE] * len(quantized)
        else:
            cells = ["undefined" if v is None else v for v in (cell(row, RATIO, q) for q in quantized)]
        t.rows.append([row.keys.get(k) for k in keys] + cells)
    return t
