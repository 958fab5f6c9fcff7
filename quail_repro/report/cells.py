"""How a table cell is shown: a number by its column's format, and a cell over seeds (Spread)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from quail_repro.recovery import UNBOUNDED
from quail_repro.stats import mean_sd


@dataclass(frozen=True)
class Spread:
    """A cell over a row's seeds: the values the seeds gave, and why the others gave none."""
    values: tuple[float, ...]
    absent: tuple[tuple[str, int], ...] = ()  # (why, how many seeds): ("failed", 1)
    interval: tuple[float, float] | None = None  # 95% bootstrap interval (recovery ratios)
    # the estimator the interval belongs to (the pooled recovery ratio), shown instead of the mean;
    # pooled=False: none defined (the cell reads undefined, whatever the seeds' own values)
    point: float | None = None
    pooled: bool = False

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return mean_sd(self.values)[0] if self.values else None

    @property
    def sd(self) -> float | None:
        return mean_sd(self.values)[1] if self.values else None

    @property
    def estimate(self) -> float | None:
        """What the cell stands for: the pooled estimate where it has one, else the mean of the seeds."""
        return self.point if self.pooled else self.mean

    def text(self, kind: str) -> str:
        """``41.2 ± 3.0 (n=2, 1 failed)``; one value without ±; none as —; a pooled estimate first:
        ``0.12 (pooled; per seed 0.10 ± 0.05, n=3; 95% CI -0.02 to 0.30)``."""
        counts = [f"{k} {why}" for why, k in self.absent]
        if not self.values:
            return "— (" + ", ".join(counts) + ")"
        value = fmt(self.mean, kind) if self.n == 1 else f"{fmt(self.mean, kind)} ± {fmt(self.sd, kind)}"
        seeds = ", ".join([f"n={self.n}"] + counts) + self._interval_text(kind)
        if self.pooled:  # the estimate the interval belongs to, the seeds' own values beside it
            return f"{'undefined' if self.point is None else fmt(self.point, kind)} (pooled; per seed {value}, {seeds})"
        return f"{value} ({seeds})"

    def _interval_text(self, kind: str) -> str:
        if not self.interval:
            return ""
        if self.interval == UNBOUNDED:  # the denominator is not told apart from 0
            return "; 95% CI unbounded"
        return f"; 95% CI {fmt(self.interval[0], kind)} to {fmt(self.interval[1], kind)}"


def error_bar(value: Any) -> tuple[float, tuple[float, float]] | None:
    """A cell as a figure draws it: (estimate, (below, above)), the bar being the bootstrap interval
    where it is bounded, else ± sd over seeds, else none. Never negative or non-finite (matplotlib
    refuses those; a pooled estimate can sit outside its percentile interval); None where there is
    no finite estimate to draw."""
    if isinstance(value, Spread):
        est = value.estimate
        if est is None or not math.isfinite(est):
            return None
        if value.interval is not None and all(math.isfinite(x) for x in value.interval):
            low, high = value.interval
            return est, (max(0.0, est - low), max(0.0, high - est))
        sd = value.sd if value.sd is not None and math.isfinite(value.sd) else 0.0
        return est, (sd, sd)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value), (0.0, 0.0)


def fmt(value: Any, kind: str) -> str:
    """A cell as text: numbers by their column's format (text | num | ratio | sci | pct), None as —."""
    if value is None:
        return "—"
    if isinstance(value, Spread):
        return value.text(kind)
    if kind == "text" and isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str) or kind == "text":
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if kind == "sci":
        return f"{value:.2e}"
    if kind in ("pct", "ratio"):
        return f"{value:.2f}"
    return f"{value:.1f}"
