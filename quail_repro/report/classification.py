"""The ``classification`` layout (+experiment=table4): accuracy on forget / retain / test, macro-F1
on test, the membership-inference AUC (and, for poisoning, accuracy on the poisoned posts under
their true labels) at each precision of ``quant``; the recovery ratio of acc-forget below."""
from __future__ import annotations

from functools import partial

from quail_repro.report.muse import muse_value, precision_notes
from quail_repro.report.recovery import Column, ratio_table
from quail_repro.report.sweep import Sweep, precision_labels, quant_descriptions
from quail_repro.report.table import Table, job_notes, label_cells, label_columns, steps_table
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
        t.notes += job_notes(row, sweep.jobs)
    t.notes = precision_notes(sweep.jobs) + t.notes
    t.notes.insert(0, "; ".join(f"{m.paper} {m.what} ({m.better})" for m in metrics)
                   + ". Accuracy and F1 in %, F1 macro-averaged over the classes; MIA is the ROC AUC of −loss, forget "
                     "posts (members) against test posts (0.5: indistinguishable; compare with the retrain row's).")
    descriptions = quant_descriptions(sweep.jobs, sweep.config, labels)
    if descriptions:
        t.notes.insert(1, "Columns: " + "; ".join(f"{labels[q]} = {d}" for q, d in descriptions.items()) + ".")
    # under the table: what quantization gave back, and how long each row unlearned
    t.extra += [x for x in (ratio_table(name, sweep, labels, (RATIO,), of=" of acc-forget"), steps_table(name, sweep)) if x is not None]
    return t
