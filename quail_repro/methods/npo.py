"""NPO: negative preference optimization against the frozen original model."""
from quail_repro import losses
from quail_repro.methods.base import Outputs, UnlearningMethod


class NPO(UnlearningMethod):
    reference_on_forget = True

    def __init__(self, beta: float):
        super().__init__()
        self.beta = float(beta)

    def forget_loss(self, cur: Outputs, ref: Outputs | None):
        return losses.npo_loss(losses.sequence_logprob(cur.logits, cur.targets),
                               losses.sequence_logprob(ref.logits, ref.targets), self.beta)
