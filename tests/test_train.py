"""Training-loop pieces: packing, bf16 weight emulation, divergence checks."""
import math

import pytest
import torch

from quail_repro.errors import Diverged
from quail_repro.train import _check_finite, descend, pack, round_params_to_bf16


def test_pack_joins_documents_and_pads_the_tail():
    blocks = pack([[1, 2, 9], [3, 9]], seq_len=2)
    assert blocks.tolist() == [[1, 2], [9, 3], [9, -100]]


def test_pack_with_a_seed_shuffles_documents_not_tokens():
    docs = [[i, i, 9] for i in range(1, 7)]
    shuffled = pack(docs, seq_len=3, seed=1).tolist()
    assert sorted(shuffled) == sorted(d for d in docs) and shuffled != docs
    assert pack(docs, seq_len=3, seed=1).tolist() == shuffled  # deterministic


def test_bf16_emulation_keeps_representable_weights_and_rounds_others_like_torch():
    layer = torch.nn.Linear(4, 1, bias=False)
    exact = torch.tensor([1.0, 0.5, -2.0, 3.0])          # representable in bf16
    odd = torch.tensor([1.0 + 2**-10, 0.1, -1 / 3, 1e-3])  # not representable
    for values in (exact, odd):
        with torch.no_grad():
            layer.weight.copy_(values.view(1, 4))
        round_params_to_bf16(layer)
        expected = values.to(torch.bfloat16).to(torch.float32)
        assert torch.equal(layer.weight.detach().view(4), expected)
    assert torch.equal(exact.to(torch.bfloat16).float(), exact)
    assert not torch.equal(odd.to(torch.bfloat16).float(), odd)


@pytest.mark.parametrize("value,bound,reason", [(math.nan, None, "not finite"), (math.inf, None, "not finite"),
                                                (-50.0, 10.0, "max_abs_loss")])
def test_divergence_is_detected(value, bound, reason):
    with pytest.raises(Diverged, match=reason) as err:
        _check_finite(7, torch.tensor(value), bound)
    assert err.value.step == 7


def test_a_bounded_finite_loss_passes():
    _check_finite(0, torch.tensor(-5.0), 10.0)


class _CharTokenizer:
    """One token per character; BOS is 1."""
    bos_token_id = 1

    def __call__(self, text, add_special_tokens):
        assert add_special_tokens is False
        return {"input_ids": [ord(c) for c in text]}


def test_muse_bos_chunks_start_with_bos_and_fill_the_last_from_the_first():
    from quail_repro.train import unlearning_blocks

    a, b, c, d, e, f, nl = (ord(x) for x in "abcdef\n")
    blocks = unlearning_blocks(_CharTokenizer(), ["abcd", "ef"], max_length=4, layout="muse_bos_chunks")
    # "abcd\n\nef" in chunks of 3 with BOS in front; the last one filled from the first chunk
    assert blocks.tolist() == [[1, a, b, c], [1, d, nl, nl], [1, e, f, 1]]


def test_an_unknown_data_layout_is_a_config_error():
    from quail_repro.errors import ConfigError
    from quail_repro.train import unlearning_blocks

    with pytest.raises(ConfigError, match="data_layout"):
        unlearning_blocks(_CharTokenizer(), ["abc"], max_length=4, layout="packed")


@pytest.mark.parametrize("grad_clip,expected_norm", [(None, 5.0), (1.0, 1.0), (10.0, 5.0)])
def test_descend_clips_the_gradient_norm_at_grad_clip(grad_clip, expected_norm):
    # loss = 3 w0 + 4 w1: gradient (3, 4), norm 5; one SGD step of lr 1 moves w by the (clipped) gradient
    w = torch.nn.Parameter(torch.zeros(2))
    model = torch.nn.Module()
    model.w = w
    descend(model, torch.optim.SGD([w], lr=1.0), w @ torch.tensor([3.0, 4.0]), 0, grad_clip, None)
    assert float(w.detach().norm()) == pytest.approx(expected_norm, rel=1e-5)
    assert torch.allclose(-w.detach() / expected_norm, torch.tensor([0.6, 0.8]))  # direction kept
