"""QUAIL: any base method + gamma * a logits-space hinge on forget tokens.

Our reading of arXiv 2601.15538 (its full text was not available): for each forget
token, the unlearned model's logits must differ from the frozen original's by at
least a margin m (half the quantization step), so the difference survives
quantization. total = base loss + gamma * mean(max(0, m - d(z_theta, z_0))).
"""
from __future__ import annotations

from quail_repro import losses
from quail_repro.errors import ConfigError
from quail_repro.methods.base import Outputs, UnlearningMethod


class Quail(UnlearningMethod):
    reference_on_forget = True

    def __init__(self, base: UnlearningMethod, gamma: float, margin: float | str, distance: str):
        auto = margin == "auto"
        if not auto and (isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0):
            raise ConfigError(f"method.hinge.margin={margin!r}: a number >= 0, or auto (resolved by the pipeline)")
        super().__init__()
        # auto: None until the stage that has the target resolves it (resolve_margin)
        self.base, self.gamma, self.distance = base, float(gamma), distance
        self.margin = None if auto else float(margin)
        self.reference_on_retain = base.reference_on_retain
        if distance not in losses.DISTANCES:  # fail before training, not at the first step
            raise ConfigError(f"method.hinge.distance={distance!r}: choose one of {losses.DISTANCES}")

    @property
    def uses_retain(self) -> bool:
        return self.base.uses_retain

    def resolve_margin(self, margin: float) -> None:
        """An auto margin, once measured on the target (stages.auto_margin)."""
        if self.margin is not None:
            raise ValueError(f"QUAIL's margin is {self.margin}, not auto: nothing to resolve")
        self.margin = float(margin)

    def loss(self, forget: tuple[Outputs, Outputs | None],
             retain: tuple[Outputs, Outputs | None] | None):
        if self.margin is None:
            raise ValueError("QUAIL's auto margin was never resolved (stages.auto_margin)")
        total, parts = self.base.loss(forget, retain)
        cur, ref = forget
        hinge, active = losses.hinge_and_activity(cur.logits, ref.logits, cur.targets, self.margin, self.distance)
        total = total + self.gamma * hinge
        parts.update(hinge=hinge.item(), hinge_active=active, total=total.item())
        return total, parts
