"""SURE (Zhang et al., ICLR 2025, their fix): a base method's loss, updating only salient modules.

Saliency of a module = the L2 norm of the gradient of the base method's forget loss with respect
to the module's own parameters (a Linear's weight and bias together), accumulated over the whole
forget set at the start, before any update. Modules at or above the ``percentile``-th percentile of
the saliencies are trained; every other parameter is frozen (requires_grad False, and left out of
the optimizer, so neither the gradient nor weight decay moves it). Their public code builds this
mask but never applies it (the hook it overrides is never called; science.md section 5): here it
is applied, and a test checks that frozen modules do not change.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from quail_repro.errors import ConfigError
from quail_repro.methods.base import OverBase, UnlearningMethod

log = logging.getLogger(__name__)


class Sure(OverBase):
    def __init__(self, base: UnlearningMethod, percentile: float):
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 <= percentile < 100:
            raise ConfigError(f"method.saliency.percentile={percentile!r}: a number in [0, 100)")
        super().__init__(base)
        self.percentile = float(percentile)
        self.selected: list[str] = []  # the trained modules, once trainable_parameters has run

    def saliency(self, model, reference, forget_blocks, batch_size: int, task) -> dict[str, float]:
        """{module name: norm of its forget-loss gradient over the forget set} at the current weights."""
        model.zero_grad(set_to_none=True)
        n_batches = 0
        for i in range(0, len(forget_blocks), batch_size):
            batch = task.batch(forget_blocks[i:i + batch_size], model.device)
            ref = None
            if self.reference_on_forget:
                with torch.no_grad():
                    ref = task.outputs(reference, batch)
            self.forget_loss(task.outputs(model, batch), ref).backward()  # gradients add up over batches
            n_batches += 1
        squares: dict[str, float] = {}
        for name, p in model.named_parameters():
            module = name.rsplit(".", 1)[0]
            g = 0.0 if p.grad is None else float(p.grad.double().pow(2).sum()) / n_batches ** 2
            squares[module] = squares.get(module, 0.0) + g
        model.zero_grad(set_to_none=True)
        return {m: s ** 0.5 for m, s in squares.items()}

    def trainable_parameters(self, model, reference, forget_blocks, batch_size: int, task) -> list:
        saliency = self.saliency(model, reference, forget_blocks, batch_size, task)
        threshold = np.percentile(list(saliency.values()), self.percentile)
        self.selected = [m for m, s in saliency.items() if s >= threshold and s > 0]
        chosen = set(self.selected)
        params = []
        for name, p in model.named_parameters():
            p.requires_grad_(name.rsplit(".", 1)[0] in chosen)
            if p.requires_grad:
                params.append(p)
        log.info("SURE: training %d of %d modules (saliency >= %.3g, the %g-th percentile)",
                 len(self.selected), len(saliency), threshold, self.percentile)
        return params
