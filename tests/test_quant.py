"""Tests of the quantization stage (quail_repro/quant): RTN math, the RTN, FullPrecision and
bitsandbytes loaders on a tiny random Llama saved to a temporary folder, the code
extraction helpers and config validation. Runs offline on CPU (plus CUDA where present)."""

import os
import tempfile

_CACHE = tempfile.mkdtemp(prefix="quail_test_quant_")
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HOME": os.path.join(_CACHE, "hf"),
    "TORCHINDUCTOR_CACHE_DIR": os.path.join(_CACHE, "inductor"),
}.items():
    os.environ.setdefault(_key, _value)

import json  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from quail_repro.errors import ConfigError, QuantizerUnavailable  # noqa: E402
from quail_repro.quant import (  # noqa: E402
    RTN,
    BitsAndBytes,
    BitsAndBytes4bit,
    BitsAndBytes8bit,
    FullPrecision,
    bnb_4bit_code_table,
    bnb_4bit_codes,
    bnb_4bit_dequantize,
    bnb_int8_codes,
    bnb_int8_dequantize,
    expand_groups,
    quant_step,
    quantizable_linears,
    rtn_codes,
    rtn_dequantize,
    rtn_quantize,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
GROUP = 32  # RTN group size used on the tiny model


def _tiny_config(tie: bool = False):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
    )


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(_tiny_config())
    with torch.no_grad():  # norms away from 1 so "untouched" is a real check
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def fp_model(tiny_path):
    return FullPrecision("none").load(tiny_path, dtype=torch.float32, device="cpu")


@pytest.fixture(scope="module")
def fp_logits(fp_model, tokens):
    with torch.no_grad():
        return fp_model(tokens).logits


# --------------------------------------------------------------------------------------
# RTN math
# --------------------------------------------------------------------------------------


def test_rtn_asymmetric_codes_by_hand():
    w = torch.tensor([[-0.3, -0.1, 0.0, 0.1, 0.2, 0.44, 0.6, 1.2]])
    # 4 bits: range [-0.3, 1.2], scale 1.5/15 = 0.1, zero = round(0.3/0.1) = 3
    codes, scale, zero = rtn_codes(w, bits=4, group_size=-1, symmetric=False)
    assert codes.tolist() == [[0, 2, 3, 4, 5, 7, 9, 15]]
    assert scale.shape == (1, 1) and torch.allclose(scale, torch.tensor([[0.1]]))
    assert zero.tolist() == [[3.0]]
    expected = torch.tensor([[-0.3, -0.1, 0.0, 0.1, 0.2, 0.4, 0.6, 1.2]])
    assert torch.allclose(rtn_dequantize(codes, scale, zero), expected, atol=1e-6)
    # 2 bits: scale 1.5/3 = 0.5, zero = round(0.6) = 1, grid {-0.5, 0, 0.5, 1.0}
    codes, scale, zero = rtn_codes(w, bits=2, group_size=8, symmetric=False)
    assert codes.tolist() == [[0, 1, 1, 1, 1, 2, 2, 3]]
    assert zero.tolist() == [[1.0]]
    assert torch.allclose(rtn_quantize(w, 2, 8, False), torch.tensor([[-0.5, 0, 0, 0, 0, 0.5, 0.5, 1.0]]))


def test_rtn_asymmetric_range_includes_zero():
    w = torch.tensor([[0.2, 0.5, 0.9, 1.5]])  # all positive: lo is widened to 0
    codes, scale, zero = rtn_codes(w, bits=2, group_size=-1, symmetric=False)
    assert zero.item() == 0.0 and torch.allclose(scale, torch.tensor([[0.5]]))
    assert codes.tolist() == [[0, 1, 2, 3]]


def test_rtn_symmetric_codes_by_hand():
    w = torch.tensor([[-0.7, -0.33, -0.04, 0.0, 0.06, 0.26, 0.52, 0.69]])
    # absmax 0.7, scale 0.7/7 = 0.1, codes -7..7, zero 0
    codes, scale, zero = rtn_codes(w, bits=4, group_size=-1, symmetric=True)
    assert codes.tolist() == [[-7, -3, 0, 0, 1, 3, 5, 7]]
    assert torch.allclose(scale, torch.tensor([[0.1]])) and zero.tolist() == [[0.0]]
    assert torch.allclose(
        rtn_quantize(w, 4, -1, True), torch.tensor([[-0.7, -0.3, 0.0, 0.0, 0.1, 0.3, 0.5, 0.7]]), atol=1e-6
    )
    # 8 bits: scale absmax/127
    assert torch.allclose(quant_step(w, 8, -1, True), torch.tensor([[0.7 / 127]]))


def test_rtn_per_channel_vs_grouped_scales():
    w = torch.tensor(
        [
            [0.01, -0.02, 0.03, -0.015, 1.0, -2.0, 3.0, -1.5],
            [0.5, 0.25, -0.5, 0.0, 0.1, -0.1, 0.2, 0.05],
        ]
    )
    per_channel = quant_step(w, 4, -1, True)
    grouped = quant_step(w, 4, 4, True)
    assert per_channel.shape == (2, 1) and grouped.shape == (2, 2)
    assert torch.allclose(per_channel[:, 0], torch.tensor([3.0, 0.5]) / 7)
    assert torch.allclose(grouped, torch.tensor([[0.03, 3.0], [0.5, 0.2]]) / 7)
    # asymmetric: (hi - lo) / 15 per group
    assert torch.allclose(quant_step(w, 4, 4, False), torch.tensor([[0.05, 5.0], [1.0, 0.3]]) / 15)
    # expand_groups gives one step per weight
    per_weight = expand_groups(grouped, w.shape)
    assert per_weight.shape == w.shape
    assert torch.equal(per_weight[:, :4], grouped[:, :1].expand(2, 4))
    # the small first group is resolved by its own scale, not by the row's
    assert rtn_quantize(w, 4, -1, True)[0, :4].abs().max() == 0
    assert torch.allclose(rtn_quantize(w, 4, 4, True)[0, :4], w[0, :4], atol=0.03 / 7 / 2 + 1e-7)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits,group_size", [(2, 16), (3, -1), (4, 16), (4, -1), (8, 32)])
def test_rtn_idempotent_bounded_and_in_range(bits, group_size, symmetric):
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(bits)) * 0.05
    codes, scale, zero = rtn_codes(w, bits, group_size, symmetric)
    q = rtn_quantize(w, bits, group_size, symmetric)
    assert q.dtype == w.dtype and q.shape == w.shape
    # idempotence: the quantized weight is a fixed point (same codes, same values)
    codes2, _, _ = rtn_codes(q, bits, group_size, symmetric)
    assert torch.equal(codes, codes2)
    assert torch.allclose(rtn_quantize(q, bits, group_size, symmetric), q, rtol=1e-6, atol=1e-9)
    # every weight is within half a step of its grid point
    step = expand_groups(quant_step(w, bits, group_size, symmetric), w.shape)
    assert ((w - q).abs() <= step / 2 * (1 + 1e-5) + 1e-9).all()
    # codes in range, at most 2^bits distinct values per group
    lo, hi = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
    assert codes.min() >= lo and codes.max() <= hi
    g = 64 if group_size == -1 else group_size
    for group in q.reshape(16, 64 // g, g).reshape(-1, g):
        assert group.unique().numel() <= 2**bits


def test_rtn_keeps_dtype_and_zero_groups():
    w = torch.zeros(2, 8, dtype=torch.bfloat16)
    w[1] = torch.linspace(-1, 1, 8)
    q = rtn_quantize(w, 4, 8, False)
    assert q.dtype == torch.bfloat16 and torch.isfinite(q).all()
    assert (q[0] == 0).all()


# --------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------


def _groups_unique_max(weight: torch.Tensor, group_size: int) -> int:
    rows, cols = weight.shape
    g = cols if group_size == -1 else group_size
    return max(group.unique().numel() for group in weight.reshape(-1, g))


@pytest.mark.parametrize("device", DEVICES)
def test_full_precision_load(tiny_path, fp_model, device):
    model = FullPrecision("none").load(tiny_path, dtype=torch.float32, device=device)
    assert not model.training
    assert next(model.parameters()).device.type == device
    ref = fp_model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value.cpu(), ref[key])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("symmetric", [False, True])
def test_rtn_load_quantizes_linears_only(tiny_path, fp_model, tokens, fp_logits, device, symmetric):
    bits = 4
    model = RTN(name="rtn4", bits=bits, group_size=GROUP, symmetric=symmetric).load(
        tiny_path, dtype=torch.float32, device=device
    )
    assert not model.training
    quantized = {name for name, _ in quantizable_linears(fp_model)}
    assert "lm_head" not in quantized and len(quantized) == 2 * 7  # q,k,v,o,gate,up,down
    ref = fp_model.state_dict()
    for key, value in model.state_dict().items():
        module = key.rsplit(".", 1)[0]
        if module in quantized:
            assert value.dtype == torch.float32
            assert not torch.equal(value.cpu(), ref[key]), key
            assert _groups_unique_max(value, GROUP) <= 2**bits, key
            assert torch.allclose(value.cpu(), rtn_quantize(ref[key], bits, GROUP, symmetric))
        else:  # embeddings, norms, lm_head
            assert torch.equal(value.cpu(), ref[key]), key
    with torch.no_grad():
        logits = model(tokens.to(device)).logits.cpu()
    diff = (logits - fp_logits).abs().max().item()
    assert 1e-4 < diff < 0.3 * fp_logits.abs().max().item()


def test_rtn_skips_tied_embeddings():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(_tiny_config(tie=True))
    before = model.model.embed_tokens.weight.detach().clone()
    done = RTN(name="r", bits=4, group_size=-1, symmetric=False).quantize_model(model)
    assert "lm_head" not in done and len(done) == 14
    assert torch.equal(model.model.embed_tokens.weight, before)


_FP32_64 = dict(bits=4, compute_dtype="float32", blocksize=64)
BNB_CASES = {
    "nf4": (BitsAndBytes4bit, dict(quant_type="nf4", double_quant=False, **_FP32_64)),
    "fp4": (BitsAndBytes4bit, dict(quant_type="fp4", double_quant=False, **_FP32_64)),
    "fp4_dq": (BitsAndBytes4bit, dict(quant_type="fp4", double_quant=True, **_FP32_64)),
    "int8": (BitsAndBytes8bit, dict(bits=8, int8_threshold=6.0)),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(BNB_CASES))
def test_bnb_load_forward_generate(tiny_path, fp_model, tokens, fp_logits, case, device):
    import bitsandbytes as bnb

    cls, kwargs = BNB_CASES[case]
    quantizer = cls(name=f"bnb_{case}", **kwargs)
    model = quantizer.load(tiny_path, dtype=torch.float32, device=device)
    assert not model.training
    expected = {name for name, _ in quantizable_linears(fp_model)}
    layer_type = bnb.nn.Linear4bit if quantizer.bits == 4 else bnb.nn.Linear8bitLt
    found = {name for name, m in model.named_modules() if isinstance(m, layer_type)}
    assert found == expected  # the same layers RTN quantizes
    assert type(model.lm_head) is nn.Linear and model.lm_head.weight.dtype == torch.float32
    ref = fp_model.state_dict()
    assert torch.equal(model.model.embed_tokens.weight.cpu(), ref["model.embed_tokens.weight"])
    assert torch.equal(model.model.norm.weight.cpu(), ref["model.norm.weight"])
    for name, module in model.named_modules():
        if name in expected and quantizer.bits == 4:
            state = module.weight.quant_state
            assert (state.quant_type, state.blocksize, state.nested) == (
                quantizer.quant_type,
                64,
                quantizer.double_quant,
            )
            # codes in the loaded layer are exactly what bnb_4bit_codes computes
            codes, absmax = bnb_4bit_codes(ref[name + ".weight"].to(device), quant_type=state.quant_type, blocksize=64)
            packed = module.weight.data.reshape(-1)
            assert torch.equal((packed >> 4), codes.reshape(-1)[0::2])
            assert torch.equal((packed & 0xF), codes.reshape(-1)[1::2])
            if not state.nested:  # with double quant the layer stores absmax compressed
                assert torch.equal(absmax, state.absmax.float())
        elif name in expected:
            assert module.state.threshold == 6.0
            codes, row_absmax = bnb_int8_codes(ref[name + ".weight"].to(device))
            assert torch.equal(module.weight.data, codes)
            assert torch.equal(module.weight.SCB.float(), row_absmax)
    with torch.no_grad():
        logits = model(tokens.to(device)).logits.float().cpu()
    assert torch.isfinite(logits).all()
    diff = (logits - fp_logits).abs().max().item()
    scale = fp_logits.abs().max().item()
    bound = 0.05 if quantizer.bits == 8 else 0.3
    assert 1e-5 < diff < bound * scale, (diff, scale)
    out = model.generate(tokens[:1, :4].to(device), max_new_tokens=5, do_sample=False)
    assert out.shape == (1, 9)


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_bnb_cpu_4bit_computes_in_compute_dtype(tiny_path, tokens, quant_type):
    """With cpu_bf16_kernel off, the CPU 4-bit forward is dequantize + fp32 matmul: equal to
    a full-precision model whose Linear weights were replaced by their 4-bit values."""
    q = BitsAndBytes4bit(
        name="b", bits=4, quant_type=quant_type, compute_dtype="float32", double_quant=False, blocksize=64
    )
    model = q.load(tiny_path, dtype=torch.float32, device="cpu")
    manual = FullPrecision("none").load(tiny_path, dtype=torch.float32, device="cpu")
    with torch.no_grad():
        for name, module in list(quantizable_linears(manual)):
            codes, absmax = bnb_4bit_codes(module.weight, quant_type=quant_type, blocksize=64)
            module.weight.copy_(bnb_4bit_dequantize(codes, absmax, quant_type=quant_type, blocksize=64))
        assert torch.allclose(model(tokens).logits, manual(tokens).logits, atol=1e-5)


# --------------------------------------------------------------------------------------
# bitsandbytes codes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_bnb_4bit_codes_roundtrip_and_buckets(quant_type):
    import bitsandbytes as bnb

    w = torch.randn(8, 128, generator=torch.Generator().manual_seed(3)) * 0.02
    codes, absmax = bnb_4bit_codes(w, quant_type=quant_type, blocksize=64)
    assert codes.shape == w.shape and codes.dtype == torch.uint8 and int(codes.max()) <= 15
    assert absmax.shape == (8 * 128 // 64,)
    packed, state = bnb.functional.quantize_4bit(w, blocksize=64, quant_type=quant_type)
    ours = bnb_4bit_dequantize(codes, absmax, quant_type=quant_type, blocksize=64)
    assert torch.equal(ours, bnb.functional.dequantize_4bit(packed, state))
    # identical weights -> identical codes
    codes_again, absmax_again = bnb_4bit_codes(w.clone(), quant_type=quant_type, blocksize=64)
    assert torch.equal(codes, codes_again) and torch.equal(absmax, absmax_again)
    # a weight moved onto another bucket's value changes that code only
    table = bnb_4bit_code_table(quant_type)
    i, j = 0, 1
    block_absmax = absmax[0].item()
    assert abs(w[i, j].item()) < block_absmax  # not the element that sets the block's scale
    old = int(codes[i, j])
    # (a nonzero value: fp4 has two codes for zero, 0 and 8, and a tiny move there can flip
    # between them without changing the value)
    target = next(k for k in range(16) if 0.05 < abs(table[k]) < 1 and abs(table[k] - table[old]) > 0.05)
    moved = w.clone()
    moved[i, j] = table[target] * block_absmax
    codes_moved, absmax_moved = bnb_4bit_codes(moved, quant_type=quant_type, blocksize=64)
    assert int(codes_moved[i, j]) == target
    changed = (codes_moved != codes).nonzero().tolist()
    assert changed == [[i, j]] and torch.equal(absmax_moved, absmax)
    # a move well inside the bucket changes nothing
    nudged = moved.clone()
    nudged[i, j] += 1e-3 * block_absmax
    assert torch.equal(bnb_4bit_codes(nudged, quant_type=quant_type, blocksize=64)[0], codes_moved)


def test_bnb_int8_codes_buckets():
    w = torch.randn(4, 64, generator=torch.Generator().manual_seed(4)) * 0.02
    codes, row_absmax = bnb_int8_codes(w)
    assert codes.dtype == torch.int8 and codes.shape == w.shape and row_absmax.shape == (4,)
    assert (bnb_int8_dequantize(codes, row_absmax) - w).abs().max() <= row_absmax.max() / 127 / 2 + 1e-4
    codes_again, absmax_again = bnb_int8_codes(w.clone())
    assert torch.equal(codes, codes_again) and torch.equal(row_absmax, absmax_again)
    step = row_absmax[0].item() / 127
    on_grid, moved = w.clone(), w.clone()
    on_grid[0, 1] = 10 * step
    moved[0, 1] = 12 * step
    codes_a, _ = bnb_int8_codes(on_grid)
    codes_b, _ = bnb_int8_codes(moved)
    assert int(codes_a[0, 1]) == 10 and int(codes_b[0, 1]) == 12
    assert (codes_a != codes_b).nonzero().tolist() == [[0, 1]]
    nudged = on_grid.clone()
    nudged[0, 1] += 0.1 * step
    assert torch.equal(bnb_int8_codes(nudged)[0], codes_a)


# --------------------------------------------------------------------------------------
# Config validation, construction, availability
# --------------------------------------------------------------------------------------

GOOD_4BIT = dict(name="b", bits=4, quant_type="nf4", compute_dtype="float32", double_quant=False, blocksize=64)
GOOD_8BIT = dict(name="b8", bits=8, int8_threshold=6.0)


@pytest.mark.parametrize(
    "kwargs,option",
    [
        (dict(bits=1), "bits"),
        (dict(bits=16), "bits"),
        (dict(bits="4"), "bits"),
        (dict(bits=True), "bits"),
        (dict(group_size=0), "group_size"),
        (dict(group_size=-2), "group_size"),
        (dict(symmetric="yes"), "symmetric"),
        (dict(name=""), "name"),
    ],
)
def test_rtn_config_errors(kwargs, option):
    args = dict(name="r", bits=4, group_size=128, symmetric=False) | kwargs
    with pytest.raises(ConfigError, match=option):
        RTN(**args)


def test_rtn_group_size_must_divide(tiny_path):
    expected = r"group_size'=48.*64 input columns of layer 'model\.layers\.0\.self_attn\.q_proj'"
    with pytest.raises(ConfigError, match=expected):
        RTN(name="r", bits=4, group_size=48, symmetric=False).load(tiny_path, dtype=torch.float32, device="cpu")
    with pytest.raises(ConfigError, match=r"group_size'=3.*8 input columns"):
        rtn_codes(torch.zeros(2, 8), bits=4, group_size=3, symmetric=True)
    with pytest.raises(ConfigError, match="bits"):
        quant_step(torch.zeros(2, 8), bits=0, group_size=-1, symmetric=True)


@pytest.mark.parametrize(
    "cls,kwargs,option",
    [
        (BitsAndBytes4bit, dict(bits=3), "bits"),
        (BitsAndBytes4bit, dict(bits=16), "bits"),
        (BitsAndBytes4bit, dict(bits=8), "bits"),  # 8-bit is the other class
        (BitsAndBytes4bit, dict(quant_type="int4"), "quant_type"),
        (BitsAndBytes4bit, dict(quant_type=None), "quant_type"),
        (BitsAndBytes4bit, dict(compute_dtype="float64"), "compute_dtype"),
        (BitsAndBytes4bit, dict(double_quant="no"), "double_quant"),
        (BitsAndBytes4bit, dict(blocksize=128), "blocksize"),
        (BitsAndBytes4bit, dict(blocksize=None), "blocksize"),
        (BitsAndBytes4bit, dict(cpu_bf16_kernel=1), "cpu_bf16_kernel"),
        (BitsAndBytes8bit, dict(bits=4), "bits"),
        (BitsAndBytes8bit, dict(int8_threshold=None), "int8_threshold"),
        (BitsAndBytes8bit, dict(int8_threshold=-1), "int8_threshold"),
    ],
)
def test_bnb_config_errors(cls, kwargs, option):
    good = GOOD_4BIT if cls is BitsAndBytes4bit else GOOD_8BIT
    with pytest.raises(ConfigError, match=option):
        cls(**(good | kwargs))


@pytest.mark.parametrize(
    "cls,kwargs,option",
    [
        (BitsAndBytes4bit, dict(int8_threshold=6.0), "int8_threshold"),
        (BitsAndBytes8bit, dict(quant_type="nf4"), "quant_type"),
        (BitsAndBytes8bit, dict(compute_dtype="float32"), "compute_dtype"),
        (BitsAndBytes8bit, dict(cpu_bf16_kernel=False), "cpu_bf16_kernel"),
    ],
)
def test_bnb_rejects_the_other_widths_options(cls, kwargs, option):
    """An option of the other bit width is an error, never silently ignored."""
    good = GOOD_4BIT if cls is BitsAndBytes4bit else GOOD_8BIT
    with pytest.raises(TypeError, match=option):
        cls(**(good | kwargs))


def test_bnb_errors_name_option_value_and_choices():
    with pytest.raises(ConfigError, match=r"'quant_type' must be one of \('nf4', 'fp4'\), got 'int4'"):
        BitsAndBytes4bit(**(GOOD_4BIT | {"quant_type": "int4"}))
    with pytest.raises(ConfigError, match=r"'compute_dtype' must be one of .*'float32'.*, got 'float64'"):
        BitsAndBytes4bit(**(GOOD_4BIT | {"compute_dtype": "float64"}))
    with pytest.raises(ConfigError, match=r"BitsAndBytes4bit option 'bits' must be 4, got 8"):
        BitsAndBytes4bit(**(GOOD_4BIT | {"bits": 8}))
    with pytest.raises(ConfigError, match=r"'int8_threshold' must be a number >= 0, got -1"):
        BitsAndBytes8bit(**(GOOD_8BIT | {"int8_threshold": -1}))
    with pytest.raises(TypeError):  # the shared base is not a quantizer of its own
        BitsAndBytes(name="b", bits=4)


def test_blocksize_error_says_why():
    with pytest.raises(ConfigError, match="BitsAndBytesConfig has no blocksize"):
        BitsAndBytes4bit(**(GOOD_4BIT | {"blocksize": 32}))


def test_instantiate_from_hydra_configs():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    configs = {
        "none": {"_target_": "quail_repro.quant.FullPrecision", "name": "none"},
        "rtn_int4_g128": {
            "_target_": "quail_repro.quant.RTN",
            "name": "rtn_int4_g128",
            "bits": 4,
            "group_size": 128,
            "symmetric": False,
        },
        "bnb_fp4": {"_target_": "quail_repro.quant.BitsAndBytes4bit", "name": "bnb_fp4", "bits": 4,
                    "quant_type": "fp4", "compute_dtype": "float32", "double_quant": False, "blocksize": 64,
                    "cpu_bf16_kernel": False},
        "bnb_int8": {"_target_": "quail_repro.quant.BitsAndBytes8bit", "name": "bnb_int8", "bits": 8,
                     "int8_threshold": 6.0},
    }
    for name, cfg in configs.items():
        quantizer = instantiate(OmegaConf.create(cfg))
        described = quantizer.describe()
        assert described["name"] == name
        json.dumps(described)
    fp4 = instantiate(OmegaConf.create(configs["bnb_fp4"]))
    bnb_config = fp4.bnb_config()
    assert bnb_config.load_in_4bit and bnb_config.bnb_4bit_quant_type == "fp4"
    assert bnb_config.bnb_4bit_compute_dtype == torch.float32 and bnb_config.bnb_4bit_use_double_quant is False
    # hydra wraps constructor errors in InstantiationException; the ConfigError is its cause
    with pytest.raises(Exception) as info:
        instantiate(OmegaConf.create(configs["rtn_int4_g128"] | {"bits": 9}))
    assert isinstance(info.value.__cause__, ConfigError) and "bits" in str(info.value.__cause__)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_bnb_unavailable_device(tiny_path):
    with pytest.raises(QuantizerUnavailable, match="CUDA"):
        BitsAndBytes4bit(**GOOD_4BIT).load(tiny_path, dtype=torch.float32, device="cuda")


def test_bnb_missing_library(tiny_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import raises ImportError
    with pytest.raises(QuantizerUnavailable, match="bitsandbytes cannot be imported"):
        BitsAndBytes4bit(**GOOD_4BIT).load(tiny_path, dtype=torch.float32, device="cpu")


def test_verify_rejects_an_unquantized_model(fp_model):
    """A load that quantized nothing (a silent no-op) must not pass as 4-bit or 8-bit."""
    for cls, kwargs in ((BitsAndBytes4bit, GOOD_4BIT), (BitsAndBytes8bit, GOOD_8BIT)):
        with pytest.raises(QuantizerUnavailable, match="left as Linear, not quantized"):
            cls(**kwargs).verify(fp_model)


def test_int8_cast_warning_filtered_other_messages_kept(tiny_path, tokens, caplog):
    import logging

    model = BitsAndBytes8bit(**GOOD_8BIT).load(tiny_path, dtype=torch.float32, device="cpu")
    with caplog.at_level(logging.WARNING):
        with torch.no_grad():
            model(tokens)
        logging.getLogger("bitsandbytes.autograd._functions").warning("another message")
    assert "MatMul8bitLt" not in caplog.text
    assert "another message" in caplog.text


def test_bf16_loads(tiny_path, tokens):
    rtn = RTN(name="r", bits=4, group_size=GROUP, symmetric=False).load(tiny_path, dtype=torch.bfloat16, device="cpu")
    assert rtn.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert _groups_unique_max(rtn.model.layers[0].mlp.up_proj.weight.float(), GROUP) <= 16
    q = BitsAndBytes4bit(name="b", bits=4, quant_type="nf4", compute_dtype="bfloat16", double_quant=True, blocksize=64)
    model = q.load(tiny_path, dtype=torch.bfloat16, device="cpu")
    assert model.lm_head.weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.isfinite(model(tokens).logits).all()
