"""A base method whose forget term is taken through the fake-quantized forward (straight-through):
it unlearns the model a quantizer would deploy, the approach of recent work on quantization-robust
unlearning, kept as a comparator for QUAIL. The retain term stays at full precision."""
from __future__ import annotations

from quail_repro.fakequant import FakeQuant
from quail_repro.methods.base import Outputs, UnlearningMethod, paired_outputs


class QuantizedForget(UnlearningMethod):
    def __init__(self, base: UnlearningMethod, quantizer):
        super().__init__()
        self.base, self.quantizer = base, quantizer
        self.reference_on_forget, self.reference_on_retain = base.reference_on_forget, base.reference_on_retain
        self.fake: FakeQuant | None = None

    @property
    def uses_retain(self) -> bool:
        return self.base.uses_retain

    def prepare(self, model, reference) -> None:
        self.base.prepare(model, reference)
        self.fake = FakeQuant(self.quantizer, model)

    def forget_outputs(self, model, reference, batch, task) -> tuple:
        return paired_outputs(model, reference, batch, task, self.reference_on_forget, forward=self.fake.view(model))

    def retain_outputs(self, model, reference, batch, task) -> tuple:
        return self.base.retain_outputs(model, reference, batch, task)

    def forget_loss(self, cur: Outputs, ref: Outputs | None):
        return self.base.forget_loss(cur, ref)

    def retain_loss(self, cur: Outputs, ref: Outputs | None):
        return self.base.retain_loss(cur, ref)

    def loss(self, forget, retain):
        return self.base.loss(forget, retain)
