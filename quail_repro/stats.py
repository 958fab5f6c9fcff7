"""Statistics over seeds and questions: mean and sample sd, and a bootstrap interval for the
recovery ratio (eval.metrics.recovery_ratio) from per-question scores."""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np

#: a seed's per-question scores for one precision and metric, as results.json keeps them
#: (recovery_items[precision][metric]): {"full": [...], "quant": [...], "target_quant": [...]}
Items = dict[str, Sequence[float]]


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (ddof=1; None for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _ratio(full: float, quant: float, target_quant: float) -> float | None:
    gap = target_quant - full
    return (quant - full) / gap if gap != 0 else None


def _pooled_means(seeds: Sequence[Items]) -> tuple[float, float, float]:
    """The means of full, quant and target_quant over every question of every seed."""
    return tuple(float(np.mean(np.concatenate([s[k] for s in seeds]))) for k in ("full", "quant", "target_quant"))


def pooled_recovery(seeds: Sequence[Items]) -> float | None:
    """(mean quant − mean full) / (mean target_quant − mean full) over every question of every seed."""
    return _ratio(*_pooled_means(seeds))


#: the interval of a ratio whose denominator the resamples do not tell apart from 0
UNBOUNDED = (-math.inf, math.inf)


def recovery_interval(seeds: Sequence[Items], *, level: float = 0.95, resamples: int = 2000,
                      rng_seed: int = 0) -> tuple[float, float] | None:
    """A percentile bootstrap interval of the pooled recovery ratio, over seeds and questions.

    Each resample draws seeds with replacement, then within each drawn seed its questions with
    replacement (the same question in its three lists, so a question's scores stay together),
    and takes the pooled ratio. None when no resample has a ratio. UNBOUNDED when the
    denominator (target at q − unlearned at full) is not told apart from 0: more than
    (1 − level) / 2 of the resamples put it at 0 or on the other side of 0 from the pooled one.
    A ratio's confidence set is then unbounded (as Fieller's is), and leaving those resamples
    out would not do: where one question carries the whole gap, every resample that draws it
    gives the same ratio and the interval would shrink to a point. One seed gives an interval
    over questions only.
    """
    scores = [np.asarray([s["full"], s["quant"], s["target_quant"]], dtype=float) for s in seeds]  # (3, questions)
    rng = np.random.default_rng(rng_seed)
    drawn = rng.integers(len(scores), size=(resamples, len(scores)))  # resample -> the seeds it draws
    sums, counts = np.zeros((resamples, 3)), np.zeros(resamples)
    for slot in range(len(scores)):  # all resamples at once, seed by seed
        for i, s in enumerate(scores):
            who = np.flatnonzero(drawn[:, slot] == i)
            questions = rng.integers(s.shape[1], size=(len(who), s.shape[1]))
            sums[who] += s[:, questions].sum(axis=2).T
            counts[who] += s.shape[1]
    full, quant, target_quant = (sums / counts[:, None]).T
    gaps = target_quant - full
    defined = gaps != 0
    if not defined.any():
        return None
    pooled_full, _, pooled_target_quant = _pooled_means(seeds)
    pooled = pooled_target_quant - pooled_full
    tail = (1 - level) / 2
    if pooled == 0 or np.mean(gaps * np.sign(pooled) <= 0) > tail:
        return UNBOUNDED
    ratios = (quant[defined] - full[defined]) / gaps[defined]
    low, high = np.percentile(ratios, [100 * tail, 100 * (1 - tail)])
    return float(low), float(high)
