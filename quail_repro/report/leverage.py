"""The ``leverage`` layout (+experiment=leverage): how far an unlearning update moves the forget
logits as depth and width grow. Each row is one point of the grid (depth, width, target knowledge,
update); the confined update (the reference's lr in bf16) stands beside one that unlearns from the
same target. Under the table, a power law fitted to each over depth and width, and what it predicts
at Llama-2-7B's size: would a confined update there move the forget logits as far as one that
unlearns? The figure: the logit shift against depth and against width, with the fits."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from omegaconf import OmegaConf

from quail_repro.plotting import pyplot
from quail_repro.report.recovery import Column, analysis_value, cell
from quail_repro.report.sweep import Job, Row, Sweep, precision_labels
from quail_repro.report.table import Table, job_notes, key_name
from quail_repro.results import Results

#: (layers, hidden size) of the model the extrapolation is for
LLAMA2_7B = (32, 4096)
#: the swept keys (by their last part) that say what kind of target and update a row has
KNOWLEDGE, UPDATE = "leverage_knowledge", "leverage_update"
CONFINED, UNLEARNING = "confined", "unlearning"
RECOVERY = Column("M2 recovery", "recovery", "knowmem_f", "ratio")


def _analysed(results: Results) -> dict | None:
    """The bucket analysis of the first quantized precision that has one (the full-precision logit
    shift and the update's norm are the same in each)."""
    return next((a for a in results.analysis.values() if a.get("status") != "failed"), None)


def logit_shift(results: Results) -> float | None:
    a = _analysed(results)
    return None if a is None else a.get("logit_shift_full")


def kl(results: Results) -> float | None:
    a = _analysed(results)
    return None if a is None else a.get("kl_full")


def update_l2(results: Results) -> float | None:
    a = _analysed(results)
    return None if a is None else a.get("update_l2")


def leverage(results: Results) -> float | None:
    """Logit shift per unit of update: the forget tokens' logit shift over ||dw||_2."""
    shift, norm = logit_shift(results), update_l2(results)
    return shift / norm if shift is not None and norm else None


def _knowmem_items(results: Results) -> dict | None:
    return next((items["knowmem_f"] for items in results.recovery_items.values() if "knowmem_f" in items), None)


def target_knowmem_f(results: Results) -> float | None:
    """The target's KnowMem-f at full precision (x100), from the per-question scores the run kept."""
    items = _knowmem_items(results)
    return None if items is None else 100 * float(np.mean(items["target_full"]))


def answers_lost(results: Results) -> float | None:
    """The share (%) of the target's KnowMem-f score that unlearning removed at full precision."""
    items = _knowmem_items(results)
    if items is None or not np.mean(items["target_full"]):
        return None
    return 100 * (1 - float(np.mean(items["full"])) / float(np.mean(items["target_full"])))


def _analysis_value(precision: str, key: str, scale: float = 1.0) -> Callable[[Results], Any]:
    def value(results: Results) -> Any:
        v = analysis_value(results, precision, key)
        return None if v is None else scale * v
    return value


def depth_width(job: Job) -> tuple[int, int] | None:
    if job.config is None:
        return None
    return (OmegaConf.select(job.config, "model.arch.num_hidden_layers"),
            OmegaConf.select(job.config, "model.arch.hidden_size"))


def _key(row: Row, name: str) -> str | None:
    return next((v for k, v in row.keys.items() if key_name(k) == name), None)


# -- the fit ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerLaw:
    """value = exp(a) x depth^b x width^c, least squares on logs over every seed's point, with the
    coefficients' standard errors (from the residuals; None with no degree of freedom left)."""
    a: float
    b: float
    c: float
    se_b: float | None
    se_c: float | None
    n: int

    def __call__(self, depth: float, width: float) -> float:
        return math.exp(self.a + self.b * math.log(depth) + self.c * math.log(width))


def fit_power_law(points: list[tuple[float, float, float]]) -> PowerLaw | None:
    """The PowerLaw through (depth, width, value) points with value > 0; None unless the points
    span at least two depths and two widths (each exponent needs its own axis)."""
    points = [p for p in points if p[2] is not None and p[2] > 0]
    if len({p[0] for p in points}) < 2 or len({p[1] for p in points}) < 2:
        return None
    x = np.array([[1.0, math.log(d), math.log(w)] for d, w, _ in points])
    y = np.array([math.log(v) for _, _, v in points])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    dof = len(points) - 3
    se = [None, None, None]
    if dof > 0:
        sigma2 = float(((y - x @ coef) ** 2).sum()) / dof
        se = [float(s) for s in np.sqrt(np.diag(sigma2 * np.linalg.inv(x.T @ x)))]
    return PowerLaw(float(coef[0]), float(coef[1]), float(coef[2]), se[1], se[2], len(points))


def _meeting(confined: PowerLaw, unlearning: PowerLaw, grows: str, held: float) -> float | None:
    """Where along ``grows`` (depth or width), the other held at ``held``, the confined fit reaches
    the unlearning fit: log ratio = da + d(held exponent) log held + d(grows exponent) log x = 0.
    None when the ratio does not grow along that axis."""
    da = confined.a - unlearning.a
    db, dc = confined.b - unlearning.b, confined.c - unlearning.c
    slope, other = (db, dc) if grows == "depth" else (dc, db)
    if slope <= 0:
        return None
    return math.exp(-(da + other * math.log(held)) / slope)


def meeting_width(confined: PowerLaw, unlearning: PowerLaw, depth: float) -> float | None:
    """The width at which, at ``depth``, the confined fit reaches the unlearning fit."""
    return _meeting(confined, unlearning, "width", depth)


def meeting_depth(confined: PowerLaw, unlearning: PowerLaw, width: float) -> float | None:
    """The depth at which, at ``width``, the confined fit reaches the unlearning fit."""
    return _meeting(confined, unlearning, "depth", width)


def _points(rows: list[Row], value_of: Callable[[Results], Any]) -> list[tuple[float, float, float]]:
    out = []
    for row in rows:
        for job in row.shown:
            dw, v = depth_width(job), value_of(job.results)
            if dw is not None and v is not None:
                out.append((*dw, v))
    return out


def fits(sweep: Sweep) -> dict[tuple[str, str], PowerLaw | None]:
    """(knowledge, quantity) -> fit; quantity: the confined and unlearning logit shifts, and the
    confined update's leverage (shift per unit of ||dw||)."""
    out = {}
    for knowledge in dict.fromkeys(_key(r, KNOWLEDGE) for r in sweep.rows):
        rows = [r for r in sweep.rows if _key(r, KNOWLEDGE) == knowledge]
        for update in (CONFINED, UNLEARNING):
            out[knowledge, f"{update} shift"] = fit_power_law(
                _points([r for r in rows if _key(r, UPDATE) == update], logit_shift))
        out[knowledge, "confined leverage"] = fit_power_law(
            _points([r for r in rows if _key(r, UPDATE) == CONFINED], leverage))
    return out


def _pm(value: float, se: float | None) -> str:
    return f"{value:.2f}" + (f" ± {se:.2f}" if se is not None else "")


def fit_table(name: str, sweep: Sweep) -> Table | None:
    found = fits(sweep)
    if not any(found.values()):
        return None
    d, w = LLAMA2_7B
    t = Table(f"{name}_fit", "Power-law fits, value = e^a × depth^b × width^c (least squares on logs, every "
              f"seed's point; ± standard error), and their value at Llama-2-7B's size ({d} layers × {w})",
              [("", "target"), ("", "quantity"), ("", "n"), ("", "depth exponent b"), ("", "width exponent c"),
               ("", "at depth 4, width 192"), ("", f"at {d} × {w}")],
              ["text", "text", "text", "text", "text", "sci", "sci"])
    for (knowledge, quantity), f in found.items():
        if f is None:
            t.rows.append([knowledge, quantity, "", "not fitted (needs two depths and two widths)", "", None, None])
            continue
        t.rows.append([knowledge, quantity, str(f.n), _pm(f.b, f.se_b), _pm(f.c, f.se_c), f(4, 192), f(d, w)])
    for knowledge in dict.fromkeys(k for k, _ in found):
        confined, unlearning = found.get((knowledge, "confined shift")), found.get((knowledge, "unlearning shift"))
        if confined is None or unlearning is None:
            continue
        ratio = confined(d, w) / unlearning(d, w)
        meet_w, meet_d = meeting_width(confined, unlearning, d), meeting_depth(confined, unlearning, w)
        t.notes.append(f"{knowledge} targets: at {d} × {w} the fits put the confined update's logit shift at "
                       f"{ratio:.2g} × that of an update that unlearns; "
                       + (f"at depth {d} the two meet at width ≈ {meet_w:,.0f}; " if meet_w is not None
                          else "the ratio does not grow with width; ")
                       + (f"at width {w} they meet at depth ≈ {meet_d:,.0f}." if meet_d is not None
                          else "it does not grow with depth either: the fits never meet."))
    points = [(dw[0], dw[1]) for row in sweep.rows for j in row.shown if (dw := depth_width(j)) is not None]
    if points:
        depths, widths = [p[0] for p in points], [p[1] for p in points]
        t.notes.append(
            f"Assumptions: a power law separable in depth and width, fitted over depths {min(depths)}-{max(depths)} "
            f"and widths {min(widths)}-{max(widths)} and extrapolated {d / max(depths):.0f}× in depth and "
            f"{w / max(widths):.0f}× in width; each shape's own target (the table shows how much each knew) and "
            "the grid's two updates (the table shows how much each removed). A pretrained 7B model on MUSE's "
            "corpus may sit off these lines.")
    return t


# -- the table and the figure -------------------------------------------------------------------


def leverage_table(name: str, report: dict, sweep: Sweep) -> Table:
    labels = precision_labels(sweep.jobs, sweep.config)
    quantized = [q for q in labels if q != "none"]
    q = quantized[0] if quantized else None
    keys = sweep.keys
    values: list[tuple[str, str, Callable[[Results], Any]]] = [
        ("target M2", "num", target_knowmem_f),
        ("M2", "num", lambda r: r.metric("none", "knowmem_f")),
        ("M4", "num", lambda r: r.metric("none", "knowmem_r")),
        ("forget answers lost (%)", "num", answers_lost),
        ("steps", "num", lambda r: r.unlearning.steps if r.unlearning else None),
        ("logit shift", "sci", logit_shift),
        ("KL", "sci", kl),
        ("‖Δw‖₂", "sci", update_l2),
        ("shift / ‖Δw‖₂", "sci", leverage),
    ]
    if q is not None:
        values += [(f"{labels[q]} changed (%)", "pct", _analysis_value(q, "frac_changed", 100)),
                   (f"{labels[q]} transfer coef.", "ratio", _analysis_value(q, "transfer_coef")),
                   (f"{labels[q]} zero code: share of Σ Δw² (%)", "pct",
                    _analysis_value(q, "by_code.zero.share_of_update_norm", 100))]
    columns = [("", key_name(k)) for k in keys] + [("", "depth × width"), ("", "status")] + \
        [("", header) for header, _, _ in values]
    formats = ["text"] * (len(keys) + 2) + [fmt for _, fmt, _ in values]
    if q is not None:
        columns.append((labels[q], RECOVERY.header))
        formats.append(RECOVERY.format)
    t = Table(name, report["title"], columns, formats)
    for row in sweep.rows:
        dw = next((depth_width(j) for j in row.jobs if depth_width(j) is not None), None)
        cells = [row.keys.get(k) for k in keys] + [f"{dw[0]} × {dw[1]}" if dw else None, row.status_text()]
        cells += [row.cell(fn) for _, _, fn in values]
        if q is not None:
            cells.append(cell(row, RECOVERY, q))
        t.rows.append(cells)
        t.notes += job_notes(row, sweep.jobs)
    t.notes.append("logit shift: the L2 distance between the unlearned model's and the target's logits, mean over "
                   "forget tokens, at full precision (KL: KL(target ‖ unlearned)); ‖Δw‖₂: the update's norm over "
                   "the quantized layers; forget answers lost: 1 − KnowMem-f / the target's KnowMem-f, at full "
                   "precision; changed, transfer and zero code: where the update lives (docs/outputs.md); "
                   "M2 recovery: what 4-bit gives back of what unlearning removed.")
    extra = fit_table(name, sweep)
    if extra is not None:
        t.extra.append(extra)
    return t


def _axes_crossing(points: list[tuple[int, int]]) -> tuple[int, int]:
    """(depth, width) where the depth axis and the width axis of the grid cross: the commonest
    depth, and the width the other depths were run at (the commonest width if none)."""
    depth = Counter(d for d, _ in points).most_common(1)[0][0]
    others = [w for d, w in points if d != depth] or [w for _, w in points]
    return depth, Counter(others).most_common(1)[0][0]


def leverage_figure(sweep: Sweep, path: Path) -> Path | None:
    """The logit shift against depth (at the grid's width) and against width (at its depth), a
    line per target knowledge and update (mean ± sd over seeds), the fits extended to Llama-2-7B."""
    found = fits(sweep)
    series: dict[tuple[str | None, str | None], dict[tuple[int, int], list[float]]] = {}
    for row in sweep.rows:
        for job in row.shown:
            dw, v = depth_width(job), logit_shift(job.results)
            if dw is not None and v is not None:
                series.setdefault((_key(row, KNOWLEDGE), _key(row, UPDATE)), {}).setdefault(dw, []).append(v)
    if not series:
        return None
    base_depth, base_width = _axes_crossing([dw for points in series.values() for dw in points])
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    panels = ((axes[0], 0, base_width, f"layers (width {base_width})", LLAMA2_7B[0]),
              (axes[1], 1, base_depth, f"hidden size (depth {base_depth})", LLAMA2_7B[1]))
    for ax, axis, fixed, xlabel, far in panels:
        ticks = {far}
        for i, ((knowledge, update), points) in enumerate(sorted(series.items(), key=str)):
            line = [(dw[axis], float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
                    for dw, v in sorted(points.items()) if dw[1 - axis] == fixed]
            if not line:
                continue
            ticks |= {p[0] for p in line}
            label = f"{knowledge} target, {update}" if knowledge else str(update)
            ax.errorbar([p[0] for p in line], [p[1] for p in line], yerr=[p[2] for p in line], marker="o",
                        capsize=3, color=f"C{i}", label=label, linestyle="none")
            f = found.get((knowledge, f"{update} shift"))
            if f is not None:
                xs = np.geomspace(min(p[0] for p in line), far, 50)
                ax.plot(xs, [f(x, fixed) if axis == 0 else f(fixed, x) for x in xs], color=f"C{i}",
                        linestyle="--" if update == CONFINED else ":", lw=1)
        ax.axvline(far, color="grey", lw=0.5)
        ax.set(xscale="log", yscale="log", xlabel=xlabel)
        ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
        ax.xaxis.set_minor_locator(plt.NullLocator())
    axes[0].set_ylabel("forget tokens' logit shift (L2)")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"points: mean ± sd over seeds; lines: power-law fits over the whole grid, extended to "
                 f"{LLAMA2_7B[0]} layers / width {LLAMA2_7B[1]} (grey)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
