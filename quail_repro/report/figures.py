"""The sweep's figure (NAME.png): per layout, the quantity the table is about."""
from __future__ import annotations

from functools import partial
from pathlib import Path

from quail_repro.plotting import pyplot
from quail_repro.report.buckets import bucket_value
from quail_repro.report.cells import Spread, error_bar
from quail_repro.report.recovery import median_dw_per_step
from quail_repro.report.leverage import leverage_figure
from quail_repro.report.scale import scale_figure
from quail_repro.report.sweep import Job, Sweep, precision_labels
from quail_repro.results import CLASSIFICATION_METRICS, MUSE_METRICS


def bars(groups: list[str], series: dict[str, list[float | Spread | None]], ylabel: str, path: Path,
         fmt: str) -> Path | None:
    """Grouped bars with their values on top: one group per row label, one bar per series (None: no
    bar); a value over seeds is a bar at the mean with a sample-sd error bar (when n > 1), a pooled
    ratio a bar at the pooled value with its bootstrap interval (cells.error_bar).

    Rows with no value in any series are left out.
    """
    seeded = any(isinstance(v, Spread) for vs in series.values() for v in vs)
    pooled = any(isinstance(v, Spread) and v.pooled for vs in series.values() for v in vs)
    series = {k: [error_bar(v) for v in vs] for k, vs in series.items()}
    keep = [i for i in range(len(groups)) if any(vs[i] is not None for vs in series.values())]
    if not keep:
        return None
    groups, series = [groups[i] for i in keep], {k: [vs[i] for i in keep] for k, vs in series.items()}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(groups) * max(1, len(series))), 4))
    width = 0.8 / max(1, len(series))
    for i, (label, vs) in enumerate(series.items()):
        drawn = [(g + i * width, v) for g, v in enumerate(vs) if v is not None]
        errors = [[bar[0] for _, (_, bar) in drawn], [bar[1] for _, (_, bar) in drawn]]
        container = ax.bar([x for x, _ in drawn], [est for _, (est, _) in drawn], width, label=label,
                           yerr=errors if any(map(any, errors)) else None, capsize=2)
        ax.bar_label(container, fmt=fmt, fontsize=6, rotation=90, padding=2)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups, rotation=45, ha="right", fontsize=8)
    ax.margins(y=0.15)  # room for the labels
    ax.set_ylabel(ylabel + (" (pooled, 95% CI)" if pooled else " (mean ± sd over seeds)" if seeded else ""))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def recovery_scatter(jobs: list[Job], path: Path) -> Path | None:
    """M2 recovery against median |dw|/step and against the transfer coefficient, one colour per quantizer."""
    labels = precision_labels(jobs)
    points = {q: [(median_dw_per_step(j.results, q), j.results.analysis_of(q, "transfer_coef"),
                   j.results.recovery_of(q, "knowmem_f"))
                  for j in jobs if q in j.results.analysis and j.results.recovery_of(q, "knowmem_f") is not None]
              for q in labels if q != "none"}
    if not any(points.values()):
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for q, pts in points.items():
        if pts:
            axes[0].scatter([p[0] for p in pts], [p[2] for p in pts], label=labels[q])
            axes[1].scatter([p[1] for p in pts], [p[2] for p in pts], label=labels[q])
    axes[0].set_xscale("log")
    axes[0].set_xlabel("median |Δw| / median quantization step")
    axes[1].set_xlabel("update transfer coefficient")
    axes[0].set_ylabel("KnowMem-forget recovery ratio")
    for ax in axes:
        ax.axhline(0, color="grey", lw=0.5)
        ax.axhline(1, color="grey", lw=0.5, ls="--")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def figure(report: dict, sweep: Sweep, path: Path) -> Path | None:
    """buckets: bucket overlap per row and quantizer; recovery: recovery against |dw|/step and the
    transfer coefficient (a point per run); scale: recovery against width, a line per storage and lr;
    leverage: the logit shift against depth and width, with the power-law fits;
    muse and classification: the report.figure metric per row and precision."""
    if report["layout"] == "recovery":
        return recovery_scatter([j for j in sweep.jobs if j.shows_numbers], path)
    if report["layout"] == "scale":
        return scale_figure(sweep, path)
    if report["layout"] == "leverage":
        return leverage_figure(sweep, path)
    rows = [row for row in sweep.rows if row.shown]
    groups = [row.label for row in rows]
    if report["layout"] == "buckets":
        quants = list(dict.fromkeys(q for row in rows for j in row.shown for q in j.results.analysis))
        series = {q: [row.cell(partial(bucket_value, precision=q, key="bucket_overlap", unit="pct")) for row in rows]
                  for q in quants}
        return bars(groups, series, "bucket overlap (% same code)", path, fmt="%.2f")
    metric = report["figure"]
    name = next((f"{m.paper} {m.what} ({m.better})" for m in MUSE_METRICS + CLASSIFICATION_METRICS
                 if m.key == metric), metric)
    labels = precision_labels(sweep.jobs)
    series = {labels[q]: [row.cell(lambda r, q=q: r.metric(q, metric)) for row in rows] for q in labels}
    return bars(groups, series, name, path, fmt="%.1f")
