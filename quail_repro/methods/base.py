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


def paired_outputs(model, reference, batch, task, with_reference: bool, forward=None,
                   reference_forward=None) -> tuple[Outputs, Outputs | None]:
    """The model's outputs on a batch (through ``forward``, the model's own by default) and, when
    asked, the frozen reference's under the same dropout masks: a model in train mode has the
    reference run in train mode too, replaying the random stream the model's forward drew from, so
    the two differ by their weights only (with dropout, an eval-mode reference differs from the
    model at step 0 already)."""
    replay = with_reference and model.training
    cuda = replay and batch_device(batch).type == "cuda"
    state = (torch.get_rng_state(), torch.cuda.get_rng_state() if cuda else None) if replay else None
    cur = task.outputs(forward or model, batch)
    if not with_reference:
        return cur, None
    with torch.no_grad():
        if state is None:
            return cur, task.outputs(reference_forward or reference, batch)
        after = (torch.get_rng_state(), torch.cuda.get_rng_state() if cuda else None)
        _set_rng(state)
        reference.train()
        try:
            ref = task.outputs(reference_forward or reference, batch)
        finally:
            reference.eval()
            _set_rng(after)
    return cur, ref


def batch_device(batch: dict) -> torch.device:
    return batch["input_ids"].device


def _set_rng(state) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1])


class UnlearningMethod:
    #: whether the frozen original model must be run on forget / retain batches
    reference_on_forget = False
    reference_on_retain = False

    def prepare(self, model, reference) -> None:
        """Once before the first step (a method that precomputes from the target overrides it)."""

    def forget_outputs(self, model, reference, batch, task) -> tuple:
        """What the forget term sees of a batch: the model's outputs and, if the method compares
        with it, the frozen original's (a method that looks through a quantizer adds to it)."""
        return paired_outputs(model, reference, batch, task, self.reference_on_forget)

    def retain_outputs(self, model, reference, batch, task) -> tuple:
        return paired_outputs(model, reference, batch, task, self.reference_on_retain)

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


class OverBase(UnlearningMethod):
    """A method put over another (SURE's saliency mask, the fake-quantized forget term): everything is
    the base's unless the subclass says otherwise."""

    def __init__(self, base: UnlearningMethod):
        self.base = base
        self.reference_on_forget, self.reference_on_retain = base.reference_on_forget, base.reference_on_retain

    @property
    def uses_retain(self) -> bool:
        return self.base.uses_retain

    def prepare(self, model, reference) -> None:
        self.base.prepare(model, reference)

    def forget_outputs(self, model, reference, batch, task) -> tuple:
        return self.base.forget_outputs(model, reference, batch, task)

    def retain_outputs(self, model, reference, batch, task) -> tuple:
        return self.base.retain_outputs(model, reference, batch, task)

    def forget_loss(self, cur: Outputs, ref: Outputs | None):
        return self.base.forget_loss(cur, ref)

    def retain_loss(self, cur: Outputs, ref: Outputs | None):
        return self.base.retain_loss(cur, ref)

    def loss(self, forget, retain):
        return self.base.loss(forget, retain)
