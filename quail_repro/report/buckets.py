"""The ``buckets`` layout: the bucket analysis (|dw| statistics, bucket overlap) of each
unlearned run, one row per quantizer."""
from __future__ import annotations

from quail_repro.report.sweep import Sweep
from quail_repro.report.table import Table, hinge_note, label_cells, label_columns

#: (analysis key, header, format); pct: stored as a fraction, shown in percent
BUCKET_STATS = [("median_abs_dw", "median |Δw|", "sci"), ("p99_abs_dw", "p99 |Δw|", "sci"),
                ("max_abs_dw", "max |Δw|", "sci"), ("median_step", "median Δ", "sci"),
                ("frac_below_half_step", "|Δw| < Δ/2 (%)", "pct"), ("bucket_overlap", "bucket overlap (%)", "pct"),
                ("value_overlap", "value overlap (%)", "pct"), ("logit_shift_full", "logit shift full", "num"),
                ("logit_shift_quant", "logit shift quant.", "num"), ("kl_full", "KL full", "sci"),
                ("kl_quant", "KL quant.", "sci"), ("transfer_coef", "transfer coef.", "ratio"),
                ("transfer_cos", "transfer cos", "ratio")]


def bucket_table(name: str, report: dict, sweep: Sweep) -> Table:
    keys, show = sweep.keys, dict(report["show"])
    columns = label_columns(keys, show) + [("", "quantizer"), ("", "status")] + [("", h) for _, h, _ in BUCKET_STATS]
    formats = ["text"] * (len(keys) + len(show) + 2) + [u for _, _, u in BUCKET_STATS]
    t = Table(name, report["title"], columns, formats)
    blank = [None] * len(BUCKET_STATS)
    for job in sweep.jobs:
        head = label_cells(job, keys, show)
        t.notes += job.failure_note() + hinge_note(job, sweep.jobs)
        if not job.shows_numbers or not job.results.analysis:
            status = job.status_text() if not job.shows_numbers else "no analysis (not unlearned)"
            t.rows.append(head + [None, status] + blank)
            continue
        for q, stats in job.results.analysis.items():
            if stats.get("status") == "failed":
                t.rows.append(head + [q, f"failed: {stats.get('error')}"] + blank)
                continue
            values = [job.results.analysis_of(q, k) for k, _, _ in BUCKET_STATS]
            t.rows.append(head + [q, "ok"] + [v * 100 if v is not None and u == "pct" else v
                                              for v, (_, _, u) in zip(values, BUCKET_STATS)])
    t.notes.append("Δ: the quantization step of the TARGET's weights (per group/block); |Δw|: unlearned − target; "
                   "bucket overlap: share of weights whose quantized code is unchanged; value overlap: share whose "
                   "dequantized value is unchanged (scale changes included); logit shift: mean "
                   "distance between the unlearned and target logits on forget text (quail_repro/analysis.py).")
    return t
