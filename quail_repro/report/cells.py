"""How a table cell is shown: a number by its column's format, and a cell over seeds (Spread)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from quail_repro.stats import UNBOUNDED, mean_sd


@dataclass(frozen=True)
class Spread:
    """A cell over a row's seeds: the values the seeds gave, and why the others gave none."""
    values: tuple[float, ...]
    absent: tuple[tuple[str, int], ...] = ()  # (why, how many seeds): ("failed", 1)
    interval: tuple[float, float] | None = None  # 95% bootstrap interval (recovery ratios)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return mean_sd(self.values)[0] if self.values else None

    @property
    def sd(self) -> float | None:
        return mean_sd(self.values)[1] if self.values else None

    def text(self, kind: str) -> str:
        """``41.2 ± 3.0 (n=2, 1 failed)``; one value without ±; none as —."""
        counts = [f"{k} {why}" for why, k in self.absent]
        if not self.values:
            return "— (" + ", ".join(counts) + ")"
        value = fmt(self.mean, kind) if self.n == 1 else f"{fmt(self.mean, kind)} ± {fmt(self.sd, kind)}"
        if not self.interval:
            interval = ""
        elif self.interval == UNBOUNDED:  # the denominator is not told apart from 0
            interval = "; 95% CI unbounded"
        else:
            interval = f"; 95% CI {fmt(self.interval[0], kind)} to {fmt(self.interval[1], kind)}"
        return f"{value} ({', '.join([f'n={self.n}'] + counts)}{interval})"


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
