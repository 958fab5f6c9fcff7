"""Published target/retrain pairs (e.g. MUSE's Llama-2-7B) loaded by hub id or local path.

Nothing is trained here: the refs point at the weights, and every later stage loads
them with the same from_pretrained call it uses for the embedded model. A local
folder with the same files (a snapshot, or a test stand-in) works the same way.
"""
from __future__ import annotations

from quail_repro.cache import Cache
from quail_repro.models.base import ModelRef, resolve_dtype


class Pretrained:
    def __init__(self, name: str, dtype: str, target: str, retrain: str, tokenizer: str):
        self.name, self.dtype = name, resolve_dtype(dtype)
        self.paths = {"target": target, "retrain": retrain}
        self.tokenizer = tokenizer

    def prepare(self, corpus, corpus_key: str, cache: Cache, device: str) -> dict[str, ModelRef]:
        # The key is the id itself: a local folder whose weights change under the
        # same path needs a new path (or a cleared cache) to be re-evaluated.
        return {role: ModelRef(path=p, key=p, tokenizer=self.tokenizer) for role, p in self.paths.items()}
