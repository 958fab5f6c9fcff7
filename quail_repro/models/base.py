"""What the pipeline needs from a model recipe: paths of a target and a retrain model."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ModelRef:
    """A saved model the later stages can load with from_pretrained.

    ``key`` identifies the weights (a cache entry name or a hub id@revision) and is
    what downstream cache keys are built from.
    """
    path: str
    key: str
    tokenizer: str


def resolve_dtype(name: str) -> torch.dtype:
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        from quail_repro.errors import ConfigError
        raise ConfigError(f"model.dtype={name!r}: choose one of {sorted(table)}")
    return table[name]
