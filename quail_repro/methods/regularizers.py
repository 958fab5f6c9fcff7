"""Retain-set regularizers, mixed into a forget method (GDR, KLR of MUSE)."""
from __future__ import annotations

from quail_repro import losses
from quail_repro.errors import ConfigError
from quail_repro.methods.base import Outputs


class _Retain:
    """A retain term weighted by alpha; mixed in before the forget method (GA_GDR(GDR, GA))."""

    def __init__(self, alpha: float, **forget_method_args):
        super().__init__(**forget_method_args)
        self.alpha = float(alpha)


class GDR(_Retain):
    """Gradient descent on retain: + alpha * NLL(retain)."""

    def retain_loss(self, cur: Outputs, ref: Outputs | None):
        return losses.mean_nll(cur.logits, cur.targets)


class KLR(_Retain):
    """KL regularizer: + alpha * KL(p_original || p_current) on retain tokens
    (``kl_reduction``: losses.kl_divergence)."""

    reference_on_retain = True

    def __init__(self, alpha: float, kl_reduction: str, **forget_method_args):
        super().__init__(alpha, **forget_method_args)
        if kl_reduction not in losses.KL_REDUCTIONS:  # fail when built, not at the first step
            raise ConfigError(f"method.kl_reduction={kl_reduction!r}: choose one of {list(losses.KL_REDUCTIONS)}")
        self.kl_reduction = kl_reduction

    def retain_loss(self, cur: Outputs, ref: Outputs | None):
        return losses.kl_divergence(ref.logits, cur.logits, cur.targets, self.kl_reduction)
