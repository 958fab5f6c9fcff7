"""Retain-set regularizers (GDR, KLR of MUSE), composed over a forget method in YAML: a method's
``loss`` is its forget method and its ``retain`` node one of these (conf/method/ga_gdr.yaml is
conf/method/ga.yaml plus ``retain: GDR``). total = forget term + alpha * retain term (base.py)."""
from __future__ import annotations

from quail_repro import losses
from quail_repro.errors import ConfigError
from quail_repro.methods.base import Outputs, UnlearningMethod


class Regularized(UnlearningMethod):
    """A forget method's own forget term, plus a retain term weighted by alpha."""

    def __init__(self, forget: UnlearningMethod, alpha: float):
        self.forget_method, self.alpha = forget, float(alpha)
        self.reference_on_forget = forget.reference_on_forget

    def prepare(self, model, reference) -> None:
        self.forget_method.prepare(model, reference)

    def forget_outputs(self, model, reference, batch, task) -> tuple:
        return self.forget_method.forget_outputs(model, reference, batch, task)

    def forget_loss(self, cur: Outputs, ref: Outputs | None):
        return self.forget_method.forget_loss(cur, ref)


class GDR(Regularized):
    """Gradient descent on retain: + alpha * NLL(retain)."""

    def retain_loss(self, cur: Outputs, ref: Outputs | None):
        return losses.mean_nll(cur.logits, cur.targets)


class KLR(Regularized):
    """KL regularizer: + alpha * KL(p_original || p_current) on retain tokens
    (``kl_reduction``: losses.kl_divergence)."""

    reference_on_retain = True

    def __init__(self, forget: UnlearningMethod, alpha: float, kl_reduction: str):
        super().__init__(forget, alpha)
        if kl_reduction not in losses.KL_REDUCTIONS:  # fail when built, not at the first step
            raise ConfigError(f"method.kl_reduction={kl_reduction!r}: choose one of {list(losses.KL_REDUCTIONS)}")
        self.kl_reduction = kl_reduction

    def retain_loss(self, cur: Outputs, ref: Outputs | None):
        return losses.kl_divergence(ref.logits, cur.logits, cur.targets, self.kl_reduction)
