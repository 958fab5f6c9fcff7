"""Invented, pronounceable names for the embedded corpora (mini_corpus.py, styles.py)."""
from __future__ import annotations

import random

_ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r", "s",
           "st", "t", "th", "v", "w", "z", "sh", "c"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ia", "ou"]
_CODAS = ["", "", "", "n", "r", "l", "s", "m", "k", "nd", "rn", "st"]


class Names:
    """Invents pronounceable names; never hands out the same name (or a word-list word) twice.

    One registry per corpus covers entity names, rivals, people and places alike, so a
    forget entity's name cannot turn up in any other document by coincidence.
    """

    def __init__(self, rng: random.Random, reserved: set[str]):
        self.rng = rng
        self.used = {w.lower() for w in reserved}

    def word(self, syllables: tuple[int, int] = (2, 3), suffixes: tuple[str, ...] = ("",)) -> str:
        for _ in range(1000):
            n = self.rng.randint(*syllables)
            stem = "".join(
                self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS) for _ in range(n)
            )
            name = (stem + self.rng.choice(suffixes)).capitalize()
            if 4 <= len(name) <= 12 and name.lower() not in self.used:
                self.used.add(name.lower())
                return name
        raise RuntimeError("name space exhausted")  # not reachable at the sizes used here
