"""Shared loss math for every unlearning method.

All functions take *aligned* logits and targets: ``logits[..., i, :]`` predicts
``targets[..., i]``. A causal LM is aligned by ``align_causal`` (shift by one); a
sequence classifier by giving one position per example. Nothing here knows about
model heads or devices, so the same math serves language models and classifiers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

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


def kl_divergence(ref_logits: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """KL(p_ref || p_model) of next-token distributions, averaged over non-ignored tokens.

    On log-softmax of both sides: the reference code applied kl_div to raw logits,
    which is not a divergence (science.md, "known defects").
    """
    mask = targets != IGNORE_INDEX
    ref_logp = torch.log_softmax(ref_logits.float(), dim=-1)
    logp = torch.log_softmax(logits.float(), dim=-1)
    per_token = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    return (per_token * mask).sum() / mask.sum().clamp_min(1)


def npo_loss(logprob: torch.Tensor, ref_logprob: torch.Tensor, beta: float) -> torch.Tensor:
    """Negative preference optimization (Zhang et al. 2024), mean over sequences.

    L = -(2/beta) * log sigmoid(-beta * (log pi_theta - log pi_ref)), on sequence
    log-probabilities. Its gradient is GA's, weighted by how much the model still
    prefers the forget sequence over the reference, so it slows down as it forgets.
    """
    log_ratio = logprob - ref_logprob
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()
