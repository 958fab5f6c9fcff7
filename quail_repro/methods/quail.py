"""QUAIL: any base method + gamma * a logits-space hinge on forget tokens.

Our reading of arXiv 2601.15538 (its full text was not available): for each forget
token, the unlearned model's logits must differ from the frozen original's by at
least a margin m (half the quantization step), so the difference survives
quantization. total = base loss + gamma * mean(max(0, m - d(z_theta, z_0))).

``space`` says where the distance is measured: ``full``, the paper's reading, between the
full-precision logits; ``quantized``, between the fake-quantized model's logits (straight-through,
fakequant.py) and the quantized target's, i.e. after the quantizer the hinge guards against. There
the distance stays exactly 0 while every weight sits in its target's bucket (no gradient), and the
hinge acts once the base method has moved some weight across a boundary: it then pushes the
quantized model at least m away from the quantized target.
"""
from __future__ import annotations

from quail_repro import losses
from quail_repro.errors import ConfigError
from quail_repro.fakequant import FakeQuant
from quail_repro.methods.base import Outputs, UnlearningMethod, paired_outputs

SPACES = ("full", "quantized")


class Quail(UnlearningMethod):
    reference_on_forget = True

    def __init__(self, base: UnlearningMethod, gamma: float, margin: float | str, distance: str, space: str,
                 quantizer=None):
        auto = margin == "auto"
        if not auto and (isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0):
            raise ConfigError(f"method.hinge.margin={margin!r}: a number >= 0, or auto (resolved by the pipeline)")
        if space not in SPACES:
            raise ConfigError(f"method.hinge.space={space!r}: choose one of {list(SPACES)}")
        if space == "quantized" and quantizer is None:
            raise ConfigError("method.hinge.space=quantized needs the quantizer it looks through "
                              "(method.auto_margin.quantizer)")
        super().__init__()
        # auto: None until the stage that has the target resolves it (resolve_margin)
        self.base, self.gamma, self.distance, self.space = base, float(gamma), distance, space
        self.quantizer = quantizer if space == "quantized" else None
        self.margin = None if auto else float(margin)
        self.reference_on_retain = base.reference_on_retain
        if distance not in losses.DISTANCES:  # fail before training, not at the first step
            raise ConfigError(f"method.hinge.distance={distance!r}: choose one of {losses.DISTANCES}")
        self.fake: FakeQuant | None = None
        self.reference_quantized = None  # the quantized target's weights, computed once (prepare)

    @property
    def uses_retain(self) -> bool:
        return self.base.uses_retain

    def resolve_margin(self, margin: float) -> None:
        """An auto margin, once measured on the target (stages.auto_margin)."""
        if self.margin is not None:
            raise ValueError(f"QUAIL's margin is {self.margin}, not auto: nothing to resolve")
        self.margin = float(margin)

    def prepare(self, model, reference) -> None:
        self.base.prepare(model, reference)
        if self.quantizer is not None:
            self.fake = FakeQuant(self.quantizer, model)
            self.reference_quantized = self.fake.weights(reference, straight_through=False)

    def forget_outputs(self, model, reference, batch, task) -> tuple:
        """(model, original) for the base's forget term, then the pair the hinge compares: the same
        (space=full), or the fake-quantized model and the quantized original (space=quantized)."""
        if self.space == "full":
            cur, ref = paired_outputs(model, reference, batch, task, True)
            return cur, ref if self.base.reference_on_forget else None, cur, ref
        cur, base_ref = paired_outputs(model, reference, batch, task, self.base.reference_on_forget)
        qcur, qref = paired_outputs(model, reference, batch, task, True, forward=self.fake.view(model),
                                    reference_forward=self.fake.view(reference, frozen=self.reference_quantized))
        return cur, base_ref, qcur, qref

    def retain_outputs(self, model, reference, batch, task) -> tuple:
        return self.base.retain_outputs(model, reference, batch, task)

    def loss(self, forget: tuple[Outputs, ...], retain: tuple[Outputs, Outputs | None] | None):
        if self.margin is None:
            raise ValueError("QUAIL's auto margin was never resolved (stages.auto_margin)")
        cur, base_ref, hinge_cur, hinge_ref = forget
        total, parts = self.base.loss((cur, base_ref), retain)
        hinge, active = losses.hinge_and_activity(hinge_cur.logits, hinge_ref.logits, hinge_cur.targets, self.margin,
                                                  self.distance)
        total = total + self.gamma * hinge
        parts.update(hinge=hinge.item(), hinge_active=active, total=total.item())
        return total, parts
