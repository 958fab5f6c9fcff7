"""The ``muse`` layout: MUSE's four metrics (M1-M4) at each precision of ``quant``, published
numbers beside ours where comparable, and the recovery ratios below."""
from __future__ import annotations

from functools import partial
from typing import Any

from quail_repro.report.cells import Spread
from quail_repro.report.published import not_comparable_table, published_cells, published_for
from quail_repro.report.recovery import ratio_table
from quail_repro.report.sweep import Job, Sweep, precision_labels, quant_descriptions
from quail_repro.report.table import Table, job_notes, label_cells, label_columns, steps_table
from quail_repro.results import MUSE_METRICS, Results


def muse_value(results: Results, precision: str, key: str) -> Any:
    """A metric, or why a finished run has none at this precision."""
    m = results.metrics.get(precision)
    if m is None:
        return "not evaluated"
    return m.get(key) if m.ok else "failed"


def utility_value(results: Results, precision: str, task: str, metric: str) -> Any:
    """An lm-eval utility score (eval.utility), or why a finished run has none at this precision."""
    m = results.metrics.get(precision)
    if m is None:
        return "not evaluated"
    if not m.ok:
        return "failed"
    return ((results.utility.get(precision) or {}).get(task) or {}).get(metric)


def utility_columns(jobs: list[Job], precisions) -> list[tuple[str, str, str]]:
    """(precision, task, metric) of every utility score some job has (standard errors left out)."""
    seen = {}
    for job in jobs:
        for q in precisions:
            for task, scores in ((job.results.utility if job.results else {}).get(q) or {}).items():
                seen.update({(q, task, m): None for m in scores if not m.endswith("_stderr")})
    return list(seen)


def precision_notes(jobs: list[Job]) -> list[str]:
    """The precisions that failed, one note per (precision, error) with the jobs it failed in: a
    quantizer that cannot run here (AWQ on a CPU) fails the same way in every job, said once."""
    showing = [j for j in jobs if j.shows_numbers]
    failed: dict[tuple[str, str], list[str]] = {}
    for job in showing:
        for q, m in job.results.metrics.items():
            if not m.ok:
                failed.setdefault((q, m.error), []).append(job.label)
    return [f"{q} failed in {f'every job ({len(who)})' if len(who) == len(showing) > 1 else ', '.join(who)}: {error}"
            for (q, error), who in failed.items()]


def muse_table(name: str, report: dict, sweep: Sweep) -> Table:
    keys, show = sweep.keys, dict(report["show"])
    labels = precision_labels(sweep.jobs, sweep.config)
    columns = label_columns(keys, show) + [("", "status")]
    columns += [(labels[q], m.paper + m.better) for q in labels for m in MUSE_METRICS]
    formats = ["text"] * (len(keys) + len(show) + 1) + ["num"] * (len(labels) * len(MUSE_METRICS))
    utility = utility_columns(sweep.jobs, labels)  # eval.utility's lm-eval scores, after MUSE's
    columns += [(labels[q], f"{task} {metric}") for q, task, metric in utility]
    formats += ["ratio"] * len(utility)
    t = Table(name, report["title"], columns, formats)
    comparable, not_comparable = set(), set()  # published tables used; why the other rows could not be
    for row in sweep.rows:
        head = label_cells(row, keys, show)
        cells = [row.cell(partial(muse_value, precision=q, key=m.key)) for q in labels for m in MUSE_METRICS]
        t.rows.append(head + [row.status_text()] + cells +
                      [row.cell(partial(utility_value, precision=q, task=task, metric=metric))
                       for q, task, metric in utility])
        t.notes += job_notes(row, sweep.jobs)
        if not row.shown:
            continue
        config = row.shown[0].config
        pub, why = published_for(config)
        if pub is None:
            not_comparable.add(why)
            continue
        comparable.add(pub.key)
        published = published_cells(pub, config.method.name, [labels[q] for q in labels])
        if any(v is not None for v in published):
            ours = [c.mean if isinstance(c, Spread) else c for c in cells]
            delta = [mine - theirs if isinstance(mine, (int, float)) and theirs is not None else None
                     for mine, theirs in zip(ours, published)]
            blank, pad = [""] * len(head), [None] * len(utility)
            t.rows.append(blank + [f"{pub.source} published"] + published + pad)
            t.rows.append(blank + ["Δ ours − published"] + delta + pad)
    t.notes = precision_notes(sweep.jobs) + t.notes
    legend = ", ".join(f"{m.paper} {m.what} ({m.better})" for m in MUSE_METRICS)
    t.notes.insert(0, f"{legend}; ROUGE-L ×100 (M1, M2, M4), PrivLeak % (M3; closer to 0 is better).")
    if utility:
        t.notes.insert(1, "Utility (eval.utility, lm-eval): acc and acc_norm are fractions (higher is better), "
                          "perplexity of the answer tokens (lower is better).")
    descriptions = quant_descriptions(sweep.jobs, sweep.config, labels)
    if descriptions:
        t.notes.insert(1, "Columns: " + "; ".join(f"{labels[q]} = {d}" for q, d in descriptions.items()) + ".")
    for key in report["published"]:
        if key not in comparable:
            t.extra.append(not_comparable_table(key, sorted(not_comparable)))
    # under the table: what quantization gave back, and how long each row unlearned
    t.extra += [x for x in (ratio_table(name, sweep, labels), steps_table(name, sweep)) if x is not None]
    return t
