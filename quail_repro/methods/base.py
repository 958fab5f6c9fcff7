"""What every unlearning method shares: total loss = forget term + alpha * retain term.

(``alpha`` belongs to the retain regularizers, methods/regularizers.py, composed over a forget
method in YAML: a method without a retain term has none.)

A method file only says how its terms differ. Terms receive ``Outputs`` (aligned
logits and targets) of the model being unlearned and, when the method asks for it,
of the frozen original model on the same batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Outputs:
    logits: torch.Tensor  # aligned: logits[..., i, :] predicts targets[..., i]
    targets: torch.Tensor  # IGNORE_INDEX where no loss is taken


class UnlearningMethod:
    #: whether the frozen original model must be run on forget / retain batches
    reference_on_forget = False
    reference_on_retain = False

    @property
    def uses_retain(self) -> bool:
        return type(self).retain_loss is not UnlearningMethod.retain_loss

    def trainable_parameters(self, model, reference, forget_blocks, batch_size: int, task) -> list:
        """The parameters unlearning updates: every trainable one (SURE, methods/sure.py, selects
        salient modules; a LoRA adapter leaves only its own trainable)."""
        return [p for p in model.parameters() if p.requires_grad]

    def forget_loss(self, cur: Outputs, ref: Outputs | None) -> torch.Tensor:
        raise NotImplementedError

    def retain_loss(self, cur: Outputs, ref: Outputs | None) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, forget: tuple[Outputs, Outputs | None],
             retain: tuple[Outputs, Outputs | None] | None) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its parts (for logging)."""
        f = self.forget_loss(*forget)
        parts = {"forget": f.item()}
        total = f
        if self.uses_retain:
            r = self.retain_loss(*retain)
            parts["retain"] = r.item()
            total = total + self.alpha * r
        parts["total"] = total.item()
        return total, parts
