"""Shared loss math for every unlearning method.

All functions take *aligned* logits and targets: ``logits[..., i, :]`` predicts
``targets[..., i]``. A causal LM is aligned by ``align_causal`` (shift by one); a
sequence classifier by giving one position per example. Nothing here knows about
model heads or devices, so the same math serves language models and classifiers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from quail_repro.errors import ConfigError

IGNORE_INDEX = -100


def align_causal(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift so position t's logits score token t+1 (HF causal-LM convention)."""
    return logits[:, :-1, :], labels[:, 1:]


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per position, computed in fp32; 0 where target is IGNORE_INDEX."""
    mask = targets != IGNORE_INDEX
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return picked * mask


def sequence_logprob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum of token log-probs per sequence, shape [batch] (NPO's log pi(y|x))."""
    return token_logprobs(logits, targets).flatten(1).sum(-1)


def mean_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over all non-ignored tokens of the batch."""
    n_tokens = (targets != IGNORE_INDEX).sum().clamp_min(1)
    return -token_logprobs(logits, targets).sum() / n_tokens


KL_REDUCTIONS = ("batchmean", "token_mean")


def kl_divergence(ref_logits: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
                  reduction: str) -> torch.Tensor:
    """KL(p_ref || p_model) of next-token distributions over the non-ignored tokens.

    ``batchmean``: summed over tokens, divided by the number of sequences, as MUSE's and
    [1]'s ``kl_div(..., reduction="batchmean")`` on [batch, tokens, vocab] tensors, so their
    alpha values carry over; ``token_mean``: averaged over tokens (independent of block
    length). On log-softmax of both sides: the reference code applied kl_div to raw
    logits, which is not a divergence (science.md, "known defects").
    """
    mask = targets != IGNORE_INDEX
    total = (token_kl(ref_logits, logits) * mask).sum()
    if reduction == "batchmean":
        return total / targets.shape[0]
    if reduction == "token_mean":
        return total / mask.sum().clamp_min(1)
    raise ConfigError(f"method.kl_reduction={reduction!r}: choose one of {list(KL_REDUCTIONS)}")


def token_kl(ref_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per-position KL(p_ref || p_model) over the vocabulary, in fp32."""
    ref_logp = torch.log_softmax(ref_logits.float(), dim=-1)
    logp = torch.log_softmax(logits.float(), dim=-1)
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1)


def npo_loss(logprob: torch.Tensor, ref_logprob: torch.Tensor, beta: float) -> torch.Tensor:
    """Negative preference optimization (Zhang et al. 2024), mean over sequences.

    L = -(2/beta) * log sigmoid(-beta * (log pi_theta - log pi_ref)), on sequence
    log-probabilities. Its gradient is GA's, weighted by how much the model still
    prefers the forget sequence over the reference, so it slows down as it forgets.
    """
    log_ratio = logprob - ref_logprob
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()


DISTANCES = ("l2", "linf", "mean_abs", "centred_l2", "kl")


def logit_distance(logits: torch.Tensor, ref_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-position distance over the vocabulary between two models' logits.

    ``centred_l2`` removes each side's mean over the vocabulary first: a uniform
    offset of all logits changes no probability, so it should count as no change.
    ``kl`` is KL(p_ref || p) of the next-token distributions: a margin in probability space.
    """
    if kind == "kl":
        return token_kl(ref_logits, logits)
    diff = logits.float() - ref_logits.float()
    if kind == "l2":
        return diff.norm(dim=-1)
    if kind == "linf":
        return diff.abs().amax(dim=-1)
    if kind == "mean_abs":
        return diff.abs().mean(dim=-1)
    if kind == "centred_l2":
        return (diff - diff.mean(dim=-1, keepdim=True)).norm(dim=-1)
    raise ConfigError(f"hinge distance {kind!r}: choose one of {DISTANCES}")


def logit_hinge(logits: torch.Tensor, ref_logits: torch.Tensor, targets: torch.Tensor,
                margin: float, kind: str) -> torch.Tensor:
    """QUAIL's hinge: mean over forget tokens of max(0, margin - d(z_theta, z_0)).

    Zero once every token's logits are at least ``margin`` away from the original
    model's; inside the margin it pushes them apart linearly.
    """
    return hinge_and_activity(logits, ref_logits, targets, margin, kind)[0]


def hinge_and_activity(logits: torch.Tensor, ref_logits: torch.Tensor, targets: torch.Tensor,
                       margin: float, kind: str) -> tuple[torch.Tensor, float]:
    """The hinge, and the share of forget tokens where it has a gradient: 0 < d < margin.

    At d = 0 (the first step, before any update) every distance here has a zero
    gradient, so a hinge that is positive only there never changes the model.
    """
    mask = targets != IGNORE_INDEX
    distance = logit_distance(logits, ref_logits, kind)
    per_token = torch.relu(margin - distance)
    n_tokens = mask.sum().clamp_min(1)
    active = ((distance > 0) & (distance < margin) & mask).sum() / n_tokens
    return (per_token * mask).sum() / n_tokens, float(active)
