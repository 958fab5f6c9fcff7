"""A base method whose forget term is taken through the fake-quantized forward (straight-through):
it unlearns the model a quantizer would deploy, the approach of recent work on quantization-robust
unlearning, kept as a comparator for QUAIL. The retain term stays at full precision."""
from __future__ import annotations

from quail_repro.fakequant import FakeQuant
from quail_repro.methods.base import OverBase, UnlearningMethod, paired_outputs


class QuantizedForget(OverBase):
    def __init__(self, base: UnlearningMethod, quantizer):
        super().__init__(base)
        self.quantizer = quantizer
        self.fake: FakeQuant | None = None

    def prepare(self, model, reference) -> None:
        super().prepare(model, reference)
        self.fake = FakeQuant(self.quantizer, model)

    def forget_outputs(self, model, reference, batch, task) -> tuple:
        return paired_outputs(model, reference, batch, task, self.reference_on_forget, forward=self.fake.view(model))
