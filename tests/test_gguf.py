"""llama.cpp's formats (quail_repro/quant/gguf.py) against the gguf package's own round trip,
the codes the bucket analysis compares, and the configs."""
import gguf
import numpy as np
import pytest
import torch
from gguf.quants import dequantize, quantize
from transformers import LlamaConfig, LlamaForCausalLM

from quail_repro.analysis import bucket_analysis, layer_names_for, quantizer_codes
from quail_repro.build import from_config
from quail_repro.compose import compose_config
from quail_repro.errors import ConfigError
from quail_repro.quant.base import FullPrecision
from quail_repro.quant.gguf import GGUF

#: code range of each format as bucket_codes reports it (q - 8 and q - 16 for the _0 formats)
RANGES = {"Q8_0": (-127, 127), "Q4_0": (-8, 7), "Q5_0": (-16, 15), "Q4_1": (0, 15), "Q5_1": (0, 31)}


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32))
    path = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(path)
    return str(path)


def _weight(seed=0, shape=(8, 64)):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    w[0, :32] = 0  # an all-zero block: scale 0
    return w


@pytest.mark.parametrize("qtype", list(RANGES))
def test_the_model_holds_the_packages_round_trip_and_the_head_is_untouched(tiny_path, qtype):
    original = FullPrecision("none").load(tiny_path, dtype=torch.float32, device="cpu")
    model = GGUF(name="g", qtype=qtype).load(tiny_path, dtype=torch.float32, device="cpu")
    state, before = model.state_dict(), original.state_dict()
    names = layer_names_for(original)
    assert len(names) == 7  # q, k, v, o, gate, up, down
    for name in names:
        w = before[name].numpy()
        expected = dequantize(quantize(w, gguf.GGMLQuantizationType[qtype]), gguf.GGMLQuantizationType[qtype])
        assert np.array_equal(state[name].numpy(), expected), name
        assert not torch.equal(state[name], before[name])
    for name in ("lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"):
        assert torch.equal(state[name], before[name])


@pytest.mark.parametrize("qtype", list(RANGES))
def test_codes_rebuild_the_dequantized_values(qtype):
    w = _weight()
    codes, values, step, zero = GGUF(name="g", qtype=qtype).bucket_codes(w)
    lo, hi = RANGES[qtype]
    assert codes.shape == w.shape and int(codes.min()) >= lo and int(codes.max()) <= hi
    assert torch.all(codes[0, :32] == 0) and torch.all(step[0, :32] == 0)
    t = gguf.GGMLQuantizationType[qtype]
    assert np.array_equal(values.numpy(), dequantize(quantize(w.numpy(), t), t))
    if qtype.endswith("_0"):  # value = d * code with |d| = step
        assert torch.equal(values.abs(), (codes.float() * step).abs())
        assert torch.all(zero == 0)
    # every weight is within half a step of its value (up to fp16 scale rounding), except those the _0
    # formats clip at the top code (their grid reaches -8/8 of the absmax on one side, 7/8 on the other)
    near = (w - values).abs() <= step * 0.5 + 1e-3 * w.abs().amax()
    assert torch.all(near | (codes == hi)) and near.float().mean() > 0.9


def test_q4_0_and_q8_0_codes_are_the_stored_ones():
    w = _weight(1)
    packed = quantize(w.numpy(), gguf.GGMLQuantizationType.Q4_0).reshape(-1, 18)
    nibbles = packed[:, 2:]
    stored = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.int16) - 8  # llama.cpp's layout
    codes = GGUF(name="g", qtype="Q4_0").bucket_codes(w)[0].numpy().reshape(-1, 32)
    nonzero = packed[:, :2].copy().view(np.float16)[:, 0] != 0
    assert np.array_equal(codes[nonzero], stored[nonzero])
    packed8 = quantize(w.numpy(), gguf.GGMLQuantizationType.Q8_0).reshape(-1, 34)
    assert np.array_equal(GGUF(name="g", qtype="Q8_0").bucket_codes(w)[0].numpy().reshape(-1, 32),
                          packed8[:, 2:].copy().view(np.int8).astype(np.int16))


def test_bucket_analysis_counts_changed_codes():
    w0 = _weight(2, (16, 64))
    q = GGUF(name="g", qtype="Q4_0")
    codes, step = quantizer_codes(q, w0)
    w1 = w0.clone()
    w1[1:, :] += step[1:, :] * 3  # three steps: every weight outside the zero block moves
    same = bucket_analysis({"w": w0}, {"w": w0.clone()}, ["w"], q)
    moved = bucket_analysis({"w": w0}, {"w": w1}, ["w"], q)
    assert same["bucket_overlap"] == 1.0 and same["value_overlap"] == 1.0
    assert moved["bucket_overlap"] <= 2 / 16 and moved["transfer_coef"] > 0.5


def test_bad_settings_name_the_option():
    with pytest.raises(ConfigError, match="qtype"):
        GGUF(name="g", qtype="Q3_K")
    with pytest.raises(ConfigError, match="blocks of 32"):
        GGUF(name="g", qtype="Q8_0").bucket_codes(torch.zeros(4, 48))


@pytest.mark.parametrize("option,qtype", [("gguf_q8_0", "Q8_0"), ("gguf_q4_0", "Q4_0"), ("gguf_q4_1", "Q4_1"),
                                          ("gguf_q5_0", "Q5_0"), ("gguf_q5_1", "Q5_1")])
def test_every_config_composes_and_builds(option, qtype):
    q = from_config(compose_config([f"quant=[none,{option}]"]).quant[option])
    assert isinstance(q, GGUF) and q.qtype == qtype and q.name == option
    assert q.describe()["qtype"] == qtype and q.describe()["block_size"] == 32
