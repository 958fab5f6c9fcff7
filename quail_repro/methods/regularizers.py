"""Retain-set regularizers, mixed into a forget method (GDR, KLR of MUSE)."""
from __future__ import annotations

from quail_repro import losses
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
    """KL regularizer: + alpha * KL(p_original || p_current) on retain tokens."""

    reference_on_retain = True

    def retain_loss(self, cur: Outputs, ref: Outputs | None):
        return losses.kl_divergence(ref.logits, cur.logits, cur.targets)
