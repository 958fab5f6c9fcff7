"""The ``buckets`` layout: the bucket analysis (|dw| statistics, bucket overlap) of each
unlearned run, one row per quantizer."""
from __future__ import annotations

from functools import partial

from quail_repro.report.sweep import Job, Sweep, combined_status
from quail_repro.report.table import Table, job_notes, label_cells, label_columns
from quail_repro.results import Results

#: (analysis key, header, format); pct: stored as a fraction, shown in percent
BUCKET_STATS = [("median_abs_dw", "median |Δw|", "sci"), ("p99_abs_dw", "p99 |Δw|", "sci"),
                ("max_abs_dw", "max |Δw|", "sci"), ("median_step", "median Δ", "sci"),
                ("frac_below_half_step", "|Δw| < Δ/2 (%)", "pct"), ("bucket_overlap", "bucket overlap (%)", "pct"),
                ("value_overlap", "value overlap (%)", "pct"), ("logit_shift_full", "logit shift full", "num"),
                ("logit_shift_quant", "logit shift quant.", "num"), ("kl_full", "KL full", "sci"),
                ("kl_quant", "KL quant.", "sci"), ("transfer_coef", "transfer coef.", "ratio"),
                ("transfer_cos", "transfer cos", "ratio")]


def analysis_status(job: Job, precision: str) -> str:
    if not job.shows_numbers:
        return job.status_text()
    stats = job.results.analysis.get(precision)
    if stats is None:
        return "no analysis"
    return f"failed: {stats.get('error')}" if stats.get("status") == "failed" else "ok"


def bucket_value(results: Results, precision: str, key: str, unit: str) -> float | None:
    value = results.analysis_of(precision, key)
    return value * 100 if value is not None and unit == "pct" else value


def bucket_table(name: str, report: dict, sweep: Sweep) -> Table:
    keys, show = sweep.keys, dict(report["show"])
    columns = label_columns(keys, show) + [("", "quantizer"), ("", "status")] + [("", h) for _, h, _ in BUCKET_STATS]
    formats = ["text"] * (len(keys) + len(show) + 2) + [u for _, _, u in BUCKET_STATS]
    t = Table(name, report["title"], columns, formats)
    for row in sweep.rows:
        head = label_cells(row, keys, show)
        t.notes += job_notes(row, sweep.jobs)
        quantizers = list(dict.fromkeys(q for j in row.shown for q in j.results.analysis))
        if not quantizers:
            status = row.status_text() if not row.shown else "no analysis (not unlearned)"
            t.rows.append(head + [None, status] + [None] * len(BUCKET_STATS))
        for q in quantizers:
            cells = [row.cell(partial(bucket_value, precision=q, key=k, unit=u)) for k, _, u in BUCKET_STATS]
            t.rows.append(head + [q, combined_status([analysis_status(j, q) for j in row.jobs])] + cells)
    t.notes.append("Δ: the quantization step of the TARGET's weights (per group/block); |Δw|: unlearned − target; "
                   "bucket overlap: share of weights whose quantized code is unchanged; value overlap: share whose "
                   "dequantized value is unchanged (scale changes included); logit shift: mean "
                   "distance between the unlearned and target logits on forget text (quail_repro/analysis.py).")
    return t
