"""Which training posts form the forget set (``dataset.forget``, a Hydra ``_target_`` node).

``select(train, n_labels)`` returns the forget set as sorted train indices and, for the
poisoning scenario, {index: true label id} of the posts whose label is flipped before
training (the forget set is then the poisoned posts: unlearning must remove their effect).
"""
from __future__ import annotations

import random

from quail_repro.errors import ConfigError, DataError


def _fraction(owner: str, fraction) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ConfigError(f"dataset.forget ({owner}) fraction={fraction!r}: a number in (0, 1)")
    return float(fraction)


def _sample(n: int, fraction: float, seed: int) -> list[int]:
    return sorted(random.Random(seed).sample(range(n), max(1, round(n * fraction))))


class ByIndices:
    def __init__(self, indices: list[int]):
        self.indices = sorted(set(int(i) for i in indices))

    def select(self, train: list[dict], n_labels: int):
        bad = [i for i in self.indices if not 0 <= i < len(train)]
        if bad:
            raise DataError(f"dataset.forget.indices: {bad} out of range for a train split of {len(train)} posts")
        return self.indices, {}

    def __repr__(self):
        return f"ByIndices({len(self.indices)} indices)"


class ByKeyword:
    """Posts whose text contains any of ``keywords`` (case-insensitive)."""

    def __init__(self, keywords: list[str]):
        self.keywords = [k.lower() for k in keywords]
        if not self.keywords:
            raise ConfigError("dataset.forget.keywords: at least one keyword")

    def select(self, train: list[dict], n_labels: int):
        return [i for i, p in enumerate(train) if any(k in p["text"].lower() for k in self.keywords)], {}

    def __repr__(self):
        return f"ByKeyword({self.keywords})"


class ByColumn:
    """Posts whose ``column`` (e.g. the claim id, or an account) is one of ``values``."""

    def __init__(self, column: str, values: list):
        self.column, self.values = column, {str(v) for v in values}

    def select(self, train: list[dict], n_labels: int):
        if train and self.column not in train[0]:
            raise DataError(f"dataset.forget.column={self.column!r}: not a column of the train split "
                            f"(columns: {sorted(train[0])})")
        return [i for i, p in enumerate(train) if str(p[self.column]) in self.values], {}

    def __repr__(self):
        return f"ByColumn({self.column} in {sorted(self.values)})"


class RandomFraction:
    def __init__(self, fraction: float, seed: int):
        self.fraction, self.seed = _fraction("random", fraction), seed

    def select(self, train: list[dict], n_labels: int):
        return _sample(len(train), self.fraction, self.seed), {}

    def __repr__(self):
        return f"RandomFraction({self.fraction}, seed={self.seed})"


class LabelFlip:
    """Poisoning: ``fraction`` of train, drawn with ``seed``, carries the wrong label (the next
    class id) in training; those posts are the forget set."""

    def __init__(self, fraction: float, seed: int):
        self.fraction, self.seed = _fraction("label_flip", fraction), seed

    def select(self, train: list[dict], n_labels: int):
        chosen = _sample(len(train), self.fraction, self.seed)
        return chosen, {i: train[i]["label"] for i in chosen}

    def __repr__(self):
        return f"LabelFlip({self.fraction}, seed={self.seed})"
