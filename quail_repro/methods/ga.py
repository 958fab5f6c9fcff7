"""GA: gradient ascent on the forget set (minimize minus the forget NLL)."""
from quail_repro import losses
from quail_repro.methods.base import Outputs, UnlearningMethod


class GA(UnlearningMethod):
    def forget_loss(self, cur: Outputs, ref: Outputs | None):
        return -losses.mean_nll(cur.logits, cur.targets)
