"""A model's forward on a quantizer's grid, for losses that look through quantization.

``FakeQuant(quantizer, model)`` knows the weights the quantizer quantizes (layer_names_for: every
Linear but the output head). ``view(model)`` is a callable with the model's signature whose forward
uses those weights quantized (analysis.quantized_values: RTN, bitsandbytes, the llama.cpp formats)
and straight-through: the value is the grid's, the gradient reaches the full-precision weight as if
quantization were the identity. A weight inside its bucket then moves the master weight but not the
quantized forward, which changes only when a weight crosses a bucket boundary. The master weights
must be fp32: under bf16 storage a step below a weight's bf16 resolution is rounded away, so a
weight larger than the update cap never reaches the next bucket at all (README, "QUAIL").
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from quail_repro.analysis import layer_names_for, quantized_values


class FakeQuant:
    def __init__(self, quantizer, model: nn.Module):
        self.quantizer = quantizer
        self.names = layer_names_for(model)

    def weights(self, model: nn.Module, straight_through: bool = True) -> dict[str, Tensor]:
        """{name: the weight on the grid}; straight_through keeps the gradient path to the weight."""
        params = dict(model.named_parameters())
        out = {}
        for name in self.names:
            w = params[name]
            q = quantized_values(self.quantizer, w.detach()).to(w.dtype)
            out[name] = w + (q - w).detach() if straight_through else q
        return out

    def view(self, model: nn.Module, frozen: dict[str, Tensor] | None = None):
        """model's forward with quantized weights: ``frozen`` (precomputed, no gradient) or, by
        default, the current weights quantized straight-through at each call."""
        def forward(**inputs):
            return functional_call(model, frozen if frozen is not None else self.weights(model), (), inputs)
        return forward
