"""The ``scale`` layout (+experiment=scale_search): one row per width, weight storage and lr with
the numbers that test whether bf16 storage confines the update to weights the 4-bit grid maps
back, and its figure: recovery against width, one line per storage and lr."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from quail_repro.plotting import pyplot
from quail_repro.report.cells import Spread, error_bar
from quail_repro.report.recovery import Column, cell, per_precision_table
from quail_repro.report.sweep import Row, Sweep, precision_labels
from quail_repro.report.table import Table
from quail_repro.recovery import UNBOUNDED

RECOVERY = Column("M2 recovery", "recovery", "knowmem_f", "ratio")
#: the columns of each quantized precision
SCALE_COLUMNS = (
    Column("M2", "metric", "knowmem_f", "num"),
    Column("M4", "metric", "knowmem_r", "num"),
    RECOVERY,
    Column("changed (%)", "analysis", "frac_changed", "pct"),
    Column("transfer coef.", "analysis", "transfer_coef", "ratio"),
    Column("zero code: share of Σ Δw² (%)", "analysis", "by_code.zero.share_of_update_norm", "pct"),
)


def scale_table(name: str, report: dict, sweep: Sweep) -> Table:
    t = per_precision_table(name, report, sweep, SCALE_COLUMNS)
    t.notes.append("M2 recovery: (unlearned at q − unlearned at full) / (target at q − unlearned at full) for "
                   "KnowMem-forget; 1 = all that unlearning removed came back, 0 = none, — = undefined. changed: "
                   "share of the quantized layers' weights with w_unlearned ≠ w_target; transfer coef.: "
                   "<Q(w_u) − Q(w_t), Δw> / <Δw, Δw>; zero code: share of the update's squared norm on weights "
                   "whose target code is the one that holds 0 (results.json analysis has the |w| deciles too).")
    return t


def storage(config: DictConfig) -> str:
    """How the weights were stored: fp32, bf16 or bf16 (emulated), from the target's and the
    unlearning's settings; both named when they differ (an fp32 target unlearned in bf16)."""
    def kind(param_dtype: str | None) -> str:
        if param_dtype == "bfloat16_emulated":
            return "bf16 (emulated)"
        native_bf16 = param_dtype in (None, "native") and OmegaConf.select(config, "model.dtype") == "bfloat16"
        return "bf16" if native_bf16 else "fp32"

    target = kind(OmegaConf.select(config, "model.train.param_dtype"))
    unlearning = kind(OmegaConf.select(config, "method.param_dtype"))
    return unlearning if target == unlearning else f"{target} target, {unlearning} unlearning"


def _setting(row: Row) -> tuple[int, str, float] | None:
    """(width, storage, lr) of a row, from its first job's config."""
    config = next((j.config for j in row.jobs if j.config is not None), None)
    if config is None:
        return None
    return (OmegaConf.select(config, "model.arch.hidden_size"), storage(config),
            OmegaConf.select(config, "method.lr"))


def scale_figure(sweep: Sweep, path: Path) -> Path | None:
    """KnowMem-forget recovery against width (log 2 axis), one panel per quantized precision and
    one line per storage and lr; error bars: 95% bootstrap interval over seeds and questions.
    A ratio whose interval is unbounded is left out, and the figure says so."""
    labels = precision_labels(sweep.jobs, sweep.config)
    quantized = [q for q in labels if q != "none"]
    lines: dict[str, dict[str, list]] = {q: {} for q in quantized}
    unbounded = 0
    for row in sweep.rows:
        setting = _setting(row)
        if setting is None or not row.shown:
            continue
        width, kind, lr = setting
        for q in quantized:
            value = cell(row, RECOVERY, q)
            if isinstance(value, Spread) and value.interval == UNBOUNDED:  # no error bar to draw
                unbounded += 1
                continue
            point = error_bar(value)
            if point is not None and width is not None:
                lines[q].setdefault(f"{kind}, lr {lr:g}", []).append((width, *point))
    if not any(lines.values()):
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(quantized), figsize=(5.5 * len(quantized), 4.2), sharey=True, squeeze=False)
    for ax, q in zip(axes[0], quantized):
        for label, points in sorted(lines[q].items()):
            points.sort()
            ax.errorbar([p[0] for p in points], [p[1] for p in points],
                        yerr=[[p[2][0] for p in points], [p[2][1] for p in points]],
                        marker="o", capsize=3, label=label,
                        linestyle="--" if label.startswith("fp32") else "-")
        widths = sorted({p[0] for points in lines[q].values() for p in points})
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.axhline(0, color="grey", lw=0.5)
        ax.axhline(1, color="grey", lw=0.5, ls="--")
        ax.set(title=labels[q], xlabel="hidden size")
    axes[0][0].set_ylabel("KnowMem-forget recovery ratio")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if unbounded:
        fig.text(0.01, 0.01, f"not drawn: {unbounded} ratio(s) whose 95% interval is unbounded (the quantized "
                 "target's gap to the unlearned model is not told apart from 0)", fontsize=7)
    fig.tight_layout(rect=(0, 0.04 if unbounded else 0, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
