"""The recovery ratio, in one place: how much of what unlearning removed quantization gives back,
(unlearned at q - unlearned at full) / (target at q - unlearned at full), where it is undefined, the
pooled estimator over seeds, its bootstrap interval, and a row's ratios from its evaluations. The
pipeline, the audit and the report tables all call this module."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from quail_repro.results import RECOVERY_ITEMS, RECOVERY_METRICS

#: a seed's per-question scores for one precision and metric, as results.json keeps them
#: (recovery_items[precision][metric]): {"full": [...], "quant": [...], "target_quant": [...],
#: "target_full": [...], "groups": [...]} (the last two from schema 5 on)
Items = dict[str, Sequence[float]]


#: the per-item scores a recovery ratio is computed from; target_full (added with schema 5) lets the
#: "unlearning removed nothing" rule apply, groups (the item's source document) the cluster bootstrap
SCORES = ("full", "quant", "target_quant", "target_full")


def ratio_or_none(full: float, quant: float, target_quant: float, target_full: float | None,
                  one_item: float) -> float | None:
    """(quant − full) / (target_quant − full); None where undefined: the denominator is not positive,
    or unlearning removed less than one item's worth at full precision (target_full − full <
    ``one_item``; then the ratio would call the target's own quantization shift recovery, and a
    tiny removal gives ratios such as −5 or 2.7). ``target_full`` None: results without it."""
    gap = target_quant - full
    if gap <= 0 or (target_full is not None and target_full - full < one_item - 1e-12):
        return None
    return (quant - full) / gap


def _seed_arrays(seed: Items) -> tuple[np.ndarray, np.ndarray]:
    """(scores, groups): the present SCORES as rows of a (k, items) array, and each item's group index
    (its source document; each item its own group where the results name none)."""
    scores = np.asarray([seed[k] for k in SCORES if k in seed], dtype=float)
    labels = seed.get("groups") or list(range(scores.shape[1]))
    _, groups = np.unique(np.asarray([str(g) for g in labels]), return_inverse=True)
    return scores, groups


def _has_target_full(seeds: Sequence[Items]) -> bool:
    return all("target_full" in s for s in seeds)


def _one_item(seeds: Sequence[Items]) -> float:
    """One item's worth on the pooled mean: 1 / the items of a seed (on average)."""
    return 1.0 / float(np.mean([len(s["full"]) for s in seeds]))


def _pooled_means(seeds: Sequence[Items]) -> list[float]:
    """The means of each present score over every item of every seed (SCORES order)."""
    keys = [k for k in SCORES if k != "target_full" or _has_target_full(seeds)]
    return [float(np.mean(np.concatenate([s[k] for s in seeds]))) for k in keys]


def pooled_recovery(seeds: Sequence[Items]) -> float | None:
    """The pooled ratio: (mean quant − mean full) / (mean target_quant − mean full) over every item
    of every seed, None where ratio_or_none says undefined."""
    means = _pooled_means(seeds)
    return ratio_or_none(*means[:3], means[3] if len(means) > 3 else None, _one_item(seeds))


#: the interval of a ratio whose denominator the resamples do not tell apart from 0
UNBOUNDED = (-math.inf, math.inf)


def recovery_interval(seeds: Sequence[Items], *, level: float = 0.95, resamples: int = 2000,
                      rng_seed: int = 0) -> tuple[float, float] | None:
    """A percentile bootstrap interval of the pooled recovery ratio (pooled_recovery, the same
    estimator the table shows), over seeds and source documents.

    Each resample draws seeds with replacement, then within each drawn seed its groups (the items
    of one source document: a town's questions, a claim's posts) with replacement, all of a group's
    items together, since they share what the model learned of their document; then takes the
    pooled ratio. None where the pooled ratio itself is undefined. UNBOUNDED where the resamples do
    not tell the ratio's definition apart from failing: more than (1 − level) / 2 of them have no
    ratio (a non-positive denominator, or a removal under one item's worth). A ratio's confidence
    set is then unbounded (as Fieller's is); leaving those resamples out would not do: where one
    question carries the whole gap, every resample that draws it gives the same ratio and the
    interval would shrink to a point. One seed gives an interval over its groups only.
    """
    if pooled_recovery(seeds) is None:
        return None
    arrays = [_seed_arrays(s) for s in seeds]
    k = min(a[0].shape[0] for a in arrays)  # target_full only where every seed has it
    rng = np.random.default_rng(rng_seed)
    drawn = rng.integers(len(arrays), size=(resamples, len(arrays)))  # resample -> the seeds it draws
    sums, counts = np.zeros((resamples, k)), np.zeros(resamples)
    for slot in range(len(arrays)):  # all resamples at once, seed by seed
        for i, (scores, groups) in enumerate(arrays):
            who = np.flatnonzero(drawn[:, slot] == i)
            n_groups = groups.max() + 1
            group_sums = np.stack([np.bincount(groups, weights=row, minlength=n_groups) for row in scores[:k]])
            sizes = np.bincount(groups, minlength=n_groups)
            picks = rng.integers(n_groups, size=(len(who), n_groups))
            sums[who] += group_sums[:, picks].sum(axis=2).T
            counts[who] += sizes[picks].sum(axis=1)
    means = sums / counts[:, None]
    full, quant, target_quant = means[:, 0], means[:, 1], means[:, 2]
    gaps = target_quant - full
    defined = gaps > 0
    if k > 3:
        defined &= means[:, 3] - full >= _one_item(seeds) - 1e-12
    tail = (1 - level) / 2
    if np.mean(~defined) > tail:
        return UNBOUNDED
    ratios = (quant[defined] - full[defined]) / gaps[defined]
    low, high = np.percentile(ratios, [100 * tail, 100 * (1 - tail)])
    return float(low), float(high)


def recovery_ratio(unlearned_full: float, unlearned_quant: float, target_quant: float, *,
                   target_full: float, one_item: float) -> float | None:
    """How much of what unlearning removed quantization gave back:
    (unlearned at q - unlearned at full) / (target at q - unlearned at full).

    1 = all of it (as far as the quantized target itself keeps it), 0 = nothing, negative =
    quantization removed more. None where undefined (ratio_or_none): a denominator that is
    not positive, or unlearning that removed less than ``one_item`` (one item's worth of the
    metric, 100 / items) at full precision. Without that rule a model that unlearning left as it
    was would score 1 wherever quantization moves the target (its quantized copy moves with it,
    and the ratio would call the target's own quantization shift "recovered"), and a removal of
    a fraction of an item gives ratios such as -5 or 2.7.
    """
    if None in (unlearned_full, unlearned_quant, target_quant, target_full):  # a metric the corpus could not give
        return None
    return ratio_or_none(unlearned_full, unlearned_quant, target_quant, target_full, one_item)


def row_recovery(evals: dict, target_evals: dict, precisions: list[str],
             keys: tuple[str, ...] = RECOVERY_METRICS) -> tuple[dict, dict]:
    """Recovery ratio per quantized precision and metric (recovery_ratio), None
    where undefined (no full-precision result of either model, a failed precision, nothing
    removed, a zero denominator), and the per-question scores it comes from (for bootstrap
    intervals). A precision that failed (its error message in place of an evaluation) has no ratio."""
    evals, target_evals = ({q: e for q, e in d.items() if not isinstance(e, str)} for d in (evals, target_evals))
    ratios, items = {}, {}
    full, target_full = evals.get("none"), target_evals.get("none")
    for q in precisions:
        if q == "none":
            continue
        mine, target = evals.get(q), target_evals.get(q)
        ratios[q] = dict.fromkeys(keys)
        if full is None or target_full is None or mine is None or target is None:
            continue
        items[q] = {}
        for k in keys:
            source, score = RECOVERY_ITEMS[k]
            rows = full.generations[source]
            ratios[q][k] = recovery_ratio(full.metrics[k], mine.metrics[k], target.metrics[k],
                                          target_full=target_full.metrics[k], one_item=100 / len(rows))
            items[q][k] = {name: [row[score] for row in e.generations[source]] for name, e in
                           (("full", full), ("quant", mine), ("target_quant", target), ("target_full", target_full))}
            # the source document of each item: the cluster bootstrap resamples a document's items together
            items[q][k]["groups"] = [row.get("source") if row.get("source") is not None else f"item{i}"
                                     for i, row in enumerate(rows)]
    return ratios, items
