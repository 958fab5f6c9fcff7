"""Statistics over seeds: the mean and the sample standard deviation."""
from __future__ import annotations

import statistics
from collections.abc import Sequence


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (ddof=1; None for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None
