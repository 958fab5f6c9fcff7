"""Loss math on tensors small enough to work out by hand."""
import math

import pytest
import torch

from quail_repro import losses
from quail_repro.errors import ConfigError
from quail_repro.methods.base import Outputs
from quail_repro.methods.ga import GA
from quail_repro.methods.npo import NPO
from quail_repro.methods.regularizers import GDR, KLR

LN3 = math.log(3.0)


def two_class(z1: float) -> torch.Tensor:
    """Logits [0, z1]: p(class 1) = e^z1 / (1 + e^z1)."""
    return torch.tensor([0.0, z1])


def test_token_logprobs_and_ignore():
    logits = torch.stack([two_class(LN3), two_class(0.0)]).unsqueeze(0)  # [1, 2, 2]
    targets = torch.tensor([[1, -100]])
    lp = losses.token_logprobs(logits, targets)
    assert lp[0, 0].item() == pytest.approx(math.log(0.75))
    assert lp[0, 1].item() == 0.0


def test_mean_nll_averages_over_valid_tokens_only():
    logits = torch.stack([two_class(LN3), two_class(LN3), two_class(0.0)]).unsqueeze(0)
    targets = torch.tensor([[1, 0, -100]])  # p = 0.75 and 0.25
    expected = -(math.log(0.75) + math.log(0.25)) / 2
    assert losses.mean_nll(logits, targets).item() == pytest.approx(expected)


def test_sequence_logprob_sums_per_sequence():
    logits = torch.stack([two_class(LN3)] * 2).unsqueeze(0).repeat(2, 1, 1)
    targets = torch.tensor([[1, 1], [1, -100]])
    seq = losses.sequence_logprob(logits, targets)
    assert seq.tolist() == pytest.approx([2 * math.log(0.75), math.log(0.75)])


def test_kl_batchmean_sums_over_tokens_and_divides_by_sequences():
    # 2 sequences x 3 positions; every scored position has KL = k (p_ref uniform, p_cur 3:1); one is padding
    k = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    ref = torch.zeros(2, 3, 2)
    cur = two_class(-LN3).view(1, 1, 2).expand(2, 3, 2)
    targets = torch.tensor([[0, 1, 0], [1, 0, losses.IGNORE_INDEX]])
    assert losses.kl_divergence(ref, cur, targets, "batchmean").item() == pytest.approx(5 * k / 2)  # [1]'s reduction
    assert losses.kl_divergence(ref, cur, targets, "token_mean").item() == pytest.approx(k)
    with pytest.raises(ConfigError, match="kl_reduction"):
        losses.kl_divergence(ref, cur, targets, "sum")


def test_align_causal_shifts_by_one():
    logits = torch.arange(3 * 2, dtype=torch.float).view(1, 3, 2)
    labels = torch.tensor([[7, 8, 9]])
    aligned_logits, aligned_targets = losses.align_causal(logits, labels)
    assert aligned_targets.tolist() == [[8, 9]]
    assert aligned_logits[0, 0].tolist() == [0.0, 1.0]


def test_kl_is_a_real_divergence_on_probabilities():
    ref = two_class(0.0).view(1, 1, 2)           # p_ref = (0.5, 0.5)
    cur = two_class(-LN3).view(1, 1, 2)          # p_cur = (0.75, 0.25)
    targets = torch.tensor([[0]])
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert losses.kl_divergence(ref, cur, targets, "token_mean").item() == pytest.approx(expected)
    # a uniform logit offset changes no probability, so no divergence
    assert losses.kl_divergence(ref, ref + 5.0, targets, "token_mean").item() == pytest.approx(0.0, abs=1e-6)


def test_npo_values_by_hand():
    beta = 0.1
    zero = torch.tensor([0.0])
    # equal to the reference: -(2/beta) log sigmoid(0) = (2/beta) ln 2
    assert losses.npo_loss(zero, zero, beta).item() == pytest.approx(2 / beta * math.log(2))
    # beta * (logp - ref) = ln 3: sigmoid(-ln 3) = 1/4
    assert losses.npo_loss(torch.tensor([LN3 / beta]), zero, beta).item() == pytest.approx(2 / beta * math.log(4))


def test_npo_gradient_pushes_logprob_down():
    logp = torch.tensor([-2.0], requires_grad=True)
    losses.npo_loss(logp, torch.tensor([-2.0]), beta=0.1).backward()
    assert logp.grad.item() > 0  # descending the loss lowers log p(forget)


def _outputs(z1: float, target: int = 1) -> Outputs:
    return Outputs(two_class(z1).view(1, 1, 2).clone().requires_grad_(True), torch.tensor([[target]]))


def test_ga_is_minus_nll_and_ascends():
    cur = _outputs(LN3)
    loss = GA().forget_loss(cur, None)
    assert loss.item() == pytest.approx(math.log(0.75))  # = -NLL
    loss.backward()
    # gradient descent on -NLL moves the target logit down
    assert cur.logits.grad[0, 0, 1].item() > 0


@pytest.mark.parametrize("name,forget_cls,retain_cls,needs_forget_ref,needs_retain_ref", [
    ("ga", GA, None, False, False), ("ga_gdr", GA, GDR, False, False), ("ga_klr", GA, KLR, False, True),
    ("npo", NPO, None, True, False), ("npo_gdr", NPO, GDR, True, False), ("npo_klr", NPO, KLR, True, True)])
def test_methods_compose_and_declare_their_reference_needs(name, forget_cls, retain_cls, needs_forget_ref,
                                                          needs_retain_ref):
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from quail_repro.validate import build_method

    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        m, _, _ = build_method(compose("config", overrides=[f"method={name}"]).method)
    # a regularized method is its forget method with a retain term composed over it, no class of its own
    assert type(m) is (retain_cls or forget_cls)
    assert type(m.forget_method if retain_cls else m) is forget_cls
    assert m.reference_on_forget is needs_forget_ref
    assert m.reference_on_retain is needs_retain_ref
    assert m.uses_retain is (retain_cls is not None)


def test_ga_gdr_total_is_forget_plus_alpha_retain():
    forget, retain = _outputs(LN3), _outputs(0.0)
    total, parts = GDR(GA(), alpha=2.0).loss((forget, None), (retain, None))
    expected = math.log(0.75) + 2.0 * math.log(2.0)   # -NLL(forget) + 2 * NLL(retain)
    assert total.item() == pytest.approx(expected)
    assert parts["forget"] == pytest.approx(math.log(0.75))
    assert parts["retain"] == pytest.approx(math.log(2.0))


def test_npo_klr_uses_reference_on_both_sides():
    forget_cur, forget_ref = _outputs(0.0), _outputs(0.0)
    retain_cur, retain_ref = _outputs(-LN3, 0), _outputs(0.0, 0)
    method = KLR(NPO(beta=0.1), alpha=1.0, kl_reduction="token_mean")
    total, parts = method.loss((forget_cur, forget_ref), (retain_cur, retain_ref))
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert parts["forget"] == pytest.approx(20 * math.log(2))
    assert parts["retain"] == pytest.approx(kl)
    assert total.item() == pytest.approx(20 * math.log(2) + kl)


def test_ga_alone_ignores_retain_data():
    total, parts = GA().loss((_outputs(LN3), None), None)
    assert "retain" not in parts
    assert total.item() == pytest.approx(math.log(0.75))


# --- QUAIL's hinge ---------------------------------------------------------------

def test_logit_distances_by_hand():
    z0 = torch.zeros(1, 1, 4)
    z = torch.tensor([[[3.0, 4.0, 0.0, 0.0]]])
    assert losses.logit_distance(z, z0, "l2").item() == pytest.approx(5.0)
    assert losses.logit_distance(z, z0, "linf").item() == pytest.approx(4.0)
    assert losses.logit_distance(z, z0, "mean_abs").item() == pytest.approx(7.0 / 4)
    offset = z0 + 2.0  # a uniform shift changes no probability
    assert losses.logit_distance(offset, z0, "l2").item() == pytest.approx(4.0)
    assert losses.logit_distance(offset, z0, "centred_l2").item() == pytest.approx(0.0, abs=1e-6)
    assert losses.logit_distance(offset, z0, "kl").item() == pytest.approx(0.0, abs=1e-6)
    # p_ref = (0.5, 0.5), p = (0.75, 0.25): KL(p_ref || p) by hand
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert losses.logit_distance(two_class(-LN3), two_class(0.0), "kl").item() == pytest.approx(kl)


def test_unknown_distance_is_a_config_error():
    from quail_repro.errors import ConfigError
    with pytest.raises(ConfigError, match="centred_l2"):
        losses.logit_distance(torch.zeros(1, 2), torch.zeros(1, 2), "cosine")


def test_hinge_is_zero_beyond_the_margin_and_linear_inside():
    z0 = torch.zeros(1, 2, 4)
    targets = torch.tensor([[0, 0]])
    far = z0.clone()
    far[..., 0] = 3.0                                      # l2 distance 3
    assert losses.logit_hinge(far, z0, targets, margin=2.0, kind="l2").item() == 0.0
    near = z0.clone()
    near[0, 0, 0], near[0, 1, 0] = 0.5, 1.5                # distances 0.5 and 1.5
    assert losses.logit_hinge(near, z0, targets, margin=2.0, kind="l2").item() == pytest.approx((1.5 + 0.5) / 2)
    # linear inside: moving one token 0.25 closer adds 0.25 / 2 tokens
    nearer = near.clone()
    nearer[0, 0, 0] = 0.25
    assert losses.logit_hinge(nearer, z0, targets, margin=2.0, kind="l2").item() == pytest.approx((1.75 + 0.5) / 2)


def test_hinge_ignores_padding_and_pushes_logits_away():
    z0 = torch.zeros(1, 2, 3)
    z = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.0, 0.0]]], requires_grad=True)
    targets = torch.tensor([[1, -100]])
    h = losses.logit_hinge(z, z0, targets, margin=1.0, kind="l2")
    assert h.item() == pytest.approx(0.5)                  # only the first position counts
    h.backward()
    assert z.grad[0, 0, 0].item() < 0                      # descending grows the distance
    assert torch.all(z.grad[0, 1] == 0)


def test_quail_adds_gamma_times_hinge_to_the_base_loss():
    from quail_repro.methods.quail import Quail
    forget_cur, forget_ref = _outputs(LN3), _outputs(0.0)   # logits [0, ln3] vs [0, 0]: l2 = ln 3
    retain = (_outputs(0.0), None)
    base = GDR(GA(), alpha=1.0)
    method = Quail(base, gamma=2.0, margin=1.5, distance="l2", space="full")
    assert method.uses_retain and method.reference_on_forget and not method.reference_on_retain
    # (model, original for the base's term: GA needs none, model and original for the hinge)
    total, parts = method.loss((forget_cur, None, forget_cur, forget_ref), retain)
    base_total, _ = base.loss((forget_cur, forget_ref), retain)
    assert parts["hinge"] == pytest.approx(1.5 - LN3)
    assert total.item() == pytest.approx(base_total.item() + 2.0 * (1.5 - LN3))
