"""Bucket analysis, logit distances and plots on hand-made weights and a tiny random Llama."""
import copy
import math

import pytest
import torch

from quail_repro.analysis import (
    bucket_analysis,
    dw_histogram,
    dw_in_steps,
    layer_names_for,
    logit_distance,
    logit_shifts,
    quantizer_codes,
)
from quail_repro.errors import ConfigError
from quail_repro.plotting import plot_dw_histogram, plot_overlap_per_layer
from quail_repro.quant import (RTN, BitsAndBytes4bit, BitsAndBytes8bit, FullPrecision, bnb_4bit_codes, bnb_int8_codes,
                               rtn_codes)

RTN4 = RTN(name="rtn_int4", bits=4, group_size=32, symmetric=False)
NF4 = BitsAndBytes4bit(name="bnb_nf4", bits=4, quant_type="nf4", compute_dtype="float32", double_quant=False,
                       blocksize=64)
FP4 = BitsAndBytes4bit(name="bnb_fp4", bits=4, quant_type="fp4", compute_dtype="float32", double_quant=False,
                       blocksize=64)
INT8 = BitsAndBytes8bit(name="bnb_int8", bits=8, int8_threshold=6.0)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.02


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def test_layer_names_are_the_quantized_linears(tiny):
    names = layer_names_for(tiny)
    assert len(names) == 2 * 7 and all(n.endswith(".weight") for n in names)
    assert "lm_head.weight" not in names and "model.layers.0.mlp.down_proj.weight" in names


@pytest.mark.parametrize("quantizer", [RTN4, NF4, INT8], ids=lambda q: q.name)
def test_identical_models_overlap_fully(tiny, quantizer):
    state = tiny.state_dict()
    out = bucket_analysis(state, {k: v.clone() for k, v in state.items()}, layer_names_for(tiny), quantizer)
    assert out["bucket_overlap"] == 1.0 and out["value_overlap"] == 1.0 and out["frac_below_half_step"] == 1.0
    assert out["median_abs_dw"] == out["mean_abs_dw"] == out["p99_abs_dw"] == out["max_abs_dw"] == 0.0
    assert out["n_weights"] == sum(state[n].numel() for n in layer_names_for(tiny)) and out["median_step"] > 0
    assert all(v["bucket_overlap"] == 1.0 for v in out["per_layer"].values())


def test_rtn_step_of_a_known_group():
    w = torch.tensor([[-0.5, -0.2, 0.0, 0.13, 0.3, 0.47, 0.8, 1.0]])
    _, step = quantizer_codes(RTN(name="r", bits=4, group_size=8, symmetric=False), w)
    assert torch.allclose(step, torch.full((1, 8), 1.5 / 15))  # (max - min) / (2^4 - 1)
    _, step = quantizer_codes(RTN(name="r", bits=4, group_size=8, symmetric=True), w)
    assert torch.allclose(step, torch.full((1, 8), 1.0 / 7))  # max|w| / (2^3 - 1)


def test_rtn_hand_made_moves():
    """k weights cross a boundary, j move 0.9 step inside their bucket, m move < step/4."""
    g, bits = RTN4.group_size, RTN4.bits
    w0 = _randn(8, 64)
    codes, scale, zero = rtn_codes(w0, bits, g, False)
    grid = lambda r, col, c: float((c - zero[r, col // g]) * scale[r, col // g])  # centre of bucket c
    group = w0.view(8, -1, g)
    extremes = set()
    for r in range(8):  # never move a group's min or max (the step would change)
        for col_group in range(w0.shape[1] // g):
            for idx in (group[r, col_group].argmin(), group[r, col_group].argmax()):
                extremes.add((r, col_group * g + int(idx)))
    cmax = codes.max().item()
    free = [(r, c) for r in range(8) for c in range(64) if (r, c) not in extremes and 1 <= codes[r, c] <= cmax - 2]
    cross, wide, small = free[:5], free[5:8], free[8:20]
    w1 = w0.clone()
    for r, c in cross:  # into the next bucket, 0.25 step past its centre: |dw| >= 0.75 step
        w1[r, c] = grid(r, c, int(codes[r, c]) + 1.25)
    for r, c in wide:  # from near the bottom edge to near the top edge of the same bucket
        w0[r, c] = grid(r, c, int(codes[r, c]) - 0.45)
        w1[r, c] = grid(r, c, int(codes[r, c]) + 0.45)
    for r, c in small:  # half way to the bucket centre: stays inside, |dw| <= step/4
        w1[r, c] = 0.5 * (w0[r, c] + grid(r, c, int(codes[r, c])))
    assert torch.equal(rtn_codes(w0, bits, g, False)[0], codes)  # the edits kept the target's codes
    n, k = w0.numel(), len(cross)
    out = bucket_analysis({"a": w0, "b": w0}, {"a": w1, "b": w0.clone()}, ["a", "b"], RTN4)
    assert out["per_layer"]["a"]["bucket_overlap"] == 1 - k / n
    assert out["per_layer"]["a"]["frac_below_half_step"] == 1 - (k + len(wide)) / n
    assert out["per_layer"]["b"] == {"bucket_overlap": 1.0, "median_abs_dw": 0.0, "frac_below_half_step": 1.0,
                                     "transfer_coef": None, "transfer_cos": None}  # no update: undefined
    assert out["bucket_overlap"] == 1 - k / (2 * n) and out["value_overlap"] == out["bucket_overlap"]
    assert out["frac_below_half_step"] == 1 - (k + len(wide)) / (2 * n)
    assert out["max_abs_dw"] == pytest.approx((w1 - w0).abs().max().item())
    ratios = dw_in_steps({"a": w0}, {"a": w1}, ["a"], RTN4)
    assert ratios.shape == (n,) and ratios.dtype == torch.float32
    assert int((ratios >= 0.5).sum()) == k + len(wide) and ratios.max() < 2


@pytest.mark.parametrize("quantizer", [NF4, FP4], ids=lambda q: q.name)
def test_bnb_4bit_one_weight_moved(quantizer):
    from quail_repro.quant import bnb_4bit_code_table

    w0 = _randn(4, 128, seed=1)
    codes, absmax = bnb_4bit_codes(w0, quant_type=quantizer.quant_type, blocksize=64)
    table = bnb_4bit_code_table(quantizer.quant_type)
    old = int(codes[0, 1])
    new = next(c for c in range(16) if 0.05 < abs(table[c]) < 1 and abs(table[c] - table[old]) > 0.05)
    w1 = w0.clone()
    w1[0, 1] = table[new] * absmax[0]  # onto another code's value; not the block's absmax element
    out = bucket_analysis({"w": w0}, {"w": w1}, ["w"], quantizer)
    assert out["bucket_overlap"] == 1 - 1 / w0.numel()
    _, step = quantizer_codes(quantizer, w0)
    spacing = 2 / 15 if quantizer.quant_type == "nf4" else 2 / 14  # distinct levels over [-1, 1]
    assert torch.allclose(step[0, :64], absmax[0] * spacing) and torch.allclose(step[0, 64:], absmax[1] * spacing)


def test_fp4_signed_zeros_count_as_the_same_bucket():
    w0 = _randn(1, 64, seed=2)
    w1 = w0.clone()
    w0[0, 5], w1[0, 5] = 1e-7, -1e-7  # both quantize to 0, through FP4's +0 and -0 codes
    raw0 = bnb_4bit_codes(w0, quant_type="fp4", blocksize=64)[0]
    raw1 = bnb_4bit_codes(w1, quant_type="fp4", blocksize=64)[0]
    assert raw0[0, 5] != raw1[0, 5]
    assert bucket_analysis({"w": w0}, {"w": w1}, ["w"], FP4)["bucket_overlap"] == 1.0


def test_bnb_int8_one_weight_moved():
    w0 = _randn(4, 64, seed=3)
    codes, row_absmax = bnb_int8_codes(w0)
    step = row_absmax[0].item() / 127
    w0[0, 1] = 10 * step
    w1 = w0.clone()
    w1[0, 1] = 12 * step
    out = bucket_analysis({"w": w0}, {"w": w1}, ["w"], INT8)
    assert out["bucket_overlap"] == 1 - 1 / w0.numel()
    middle = row_absmax.sort().values[1:3]  # 4 rows of 64 equal steps: the median averages rows 2 and 3
    assert out["median_step"] == pytest.approx(middle.mean().item() / 127, rel=1e-6)


def test_full_precision_has_no_buckets():
    with pytest.raises(ConfigError, match="RTN or BitsAndBytes"):
        quantizer_codes(FullPrecision("none"), torch.zeros(2, 8))


def test_logit_distance_kinds():
    z, z0 = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 0.0, 3.0]])
    assert logit_distance(z, z0, "l2").tolist() == [2.0]
    assert logit_distance(z, z0, "linf").tolist() == [2.0]
    assert logit_distance(z, z0, "mean_abs").item() == pytest.approx(2 / 3)
    # centred: [-1, 0, 1] - [-1/3, -4/3, 5/3] = [-2/3, 4/3, -2/3]
    assert logit_distance(z, z0, "centred_l2").item() == pytest.approx(math.sqrt(24 / 9))
    assert logit_distance(z, z + 5, "centred_l2").item() == pytest.approx(0, abs=1e-6)
    assert logit_distance(z, z + 5, "l2").item() == pytest.approx(5 * math.sqrt(3))
    assert logit_distance(torch.zeros(2, 4, 7), torch.ones(2, 4, 7), "linf").shape == (2, 4)
    with pytest.raises(ConfigError, match="centred_l2"):
        logit_distance(z, z0, "cosine")


def test_logit_shift(tiny):
    blocks = torch.randint(0, 128, (3, 10), generator=torch.Generator().manual_seed(0))
    blocks[2, 6:] = -100
    assert logit_shifts(tiny, tiny, blocks, ("l2", "kl")) == {"l2": 0.0, "kl": 0.0}
    other = copy.deepcopy(tiny)
    with torch.no_grad():
        other.model.layers[0].mlp.down_proj.weight.add_(0.05)
    two_at_a_time = logit_shifts(tiny, other, blocks, ("l2", "linf", "kl"), batch_size=2)
    assert all(v > 0 for v in two_at_a_time.values())
    assert logit_shifts(tiny, other, blocks, ("l2",))["l2"] == pytest.approx(two_at_a_time["l2"])
    with pytest.raises(ConfigError):
        logit_shifts(tiny, other, blocks, ("cosine",))


def test_the_dw_histogram_counts_by_decade_and_keeps_zeros_apart():
    ratios = torch.tensor([0.0, 0.0, 1e-3, 2e-3, 0.5, 0.6, 1e-12, 1e9])  # the last two: clamped to the ends
    h = dw_histogram(ratios)
    assert (h["zeros"], h["total"], sum(h["counts"])) == (2, 8, 6)
    lo, hi = h["log10_range"]
    width = (hi - lo) / len(h["counts"])
    def bin_of(x):
        return min(int((math.log10(x) - lo) / width), len(h["counts"]) - 1)
    assert h["counts"][0] == 1 and h["counts"][-1] == 1
    assert h["counts"][bin_of(1e-3)] == 1 and h["counts"][bin_of(2e-3)] == 1
    assert h["counts"][bin_of(0.5)] == 1 and h["counts"][bin_of(0.6)] == 1 and bin_of(0.5) != bin_of(0.6)

def test_plots_write_png(tmp_path):
    ratios = {"ga": torch.rand(1000) * 2, "npo": torch.cat([torch.zeros(10), torch.rand(100) * 1e-3])}
    path = plot_dw_histogram({k: dw_histogram(v) for k, v in ratios.items()}, tmp_path / "hist.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    per_layer = {q: {f"model.layers.{i}.mlp.up_proj.weight": {"bucket_overlap": 0.9 + i / 100} for i in range(4)}
                 for q in ("rtn_int4", "bnb_nf4")}
    path = plot_overlap_per_layer(per_layer, tmp_path / "overlap.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 1000


# -- update transfer (how much of dw survives quantization) ------------------------------

def _rtn4_pair(moves: dict[int, float]):
    """One 1x8 group with min -0.3, max 1.2 (asymmetric 4-bit step 0.1, zero point 3), and
    a copy with the given weights moved; the ends stay put, so the grid does not change."""
    w0 = torch.tensor([[-0.3, 0.0, 0.1, 0.2, 0.4, 0.6, 0.9, 1.2]])
    w1 = w0.clone()
    for i, delta in moves.items():
        w1[0, i] += delta
    return {"l.weight": w0}, {"l.weight": w1}


def test_transfer_is_one_for_a_grid_aligned_update():
    t, u = _rtn4_pair({2: 0.1, 4: -0.2})  # whole steps: the quantized update equals dw
    stats = bucket_analysis(t, u, ["l.weight"], RTN(name="rtn_int4", bits=4, group_size=8, symmetric=False))
    assert stats["transfer_coef"] == pytest.approx(1.0, abs=1e-5)
    assert stats["transfer_cos"] == pytest.approx(1.0, abs=1e-5)
    assert stats["transfer_coef_flipped"] == pytest.approx(1.0, abs=1e-5)


def test_transfer_is_zero_when_no_code_flips():
    t, u = _rtn4_pair({2: 0.01, 4: -0.02})  # inside their buckets
    stats = bucket_analysis(t, u, ["l.weight"], RTN(name="rtn_int4", bits=4, group_size=8, symmetric=False))
    assert stats["bucket_overlap"] == 1.0
    assert stats["transfer_coef"] == 0.0
    assert stats["transfer_cos"] is None            # no quantized change: the cosine is undefined
    assert stats["transfer_coef_flipped"] is None   # and nothing flipped


def test_transfer_of_one_flip_by_hand():
    # weight 2 (0.1, code 4) moves +0.06 to 0.16: rounds to 0.2, a quantized change of 0.1;
    # weight 4 (0.4) moves +0.02: stays. <q,d> = 0.1*0.06, <d,d> = 0.06^2 + 0.02^2
    t, u = _rtn4_pair({2: 0.06, 4: 0.02})
    stats = bucket_analysis(t, u, ["l.weight"], RTN(name="rtn_int4", bits=4, group_size=8, symmetric=False))
    assert stats["transfer_coef"] == pytest.approx(0.1 * 0.06 / (0.06**2 + 0.02**2), rel=1e-4)
    assert stats["transfer_coef_flipped"] == pytest.approx(0.1 / 0.06, rel=1e-4)
    assert stats["per_layer"]["l.weight"]["transfer_coef"] == pytest.approx(stats["transfer_coef"])


# -- where the update lives (which weights changed, split by code and by |w|) -------------

def test_where_the_update_lives_by_hand():
    # one asymmetric 4-bit group of 10: min -0.3, max 1.2, step 0.1, zero point 3 (the code of 0.0);
    # |w0| = 0.3, 0, 0.1, 0.2, 0.4, 0.5, 0.6, 0.9, 1.0, 1.2: all distinct, so each |w| decile holds
    # one weight, in the order 0 (i1), 0.1 (i2), 0.2 (i3), 0.3 (i0), 0.4 (i4), 0.5, 0.6, 0.9 (i7), 1.0, 1.2.
    # Moves (ends fixed, so the grid stays): i1 0.0 -> 0.04 (still code 3: q 0), i2 0.1 -> 0.16
    # (rounds to 0.2: q +0.1), i4 0.4 -> 0.42 (q 0), i7 0.9 -> 0.83 (rounds to 0.8: q -0.1).
    w0 = torch.tensor([[-0.3, 0.0, 0.1, 0.2, 0.4, 0.5, 0.6, 0.9, 1.0, 1.2]])
    w1 = w0.clone()
    for i, delta in {1: 0.04, 2: 0.06, 4: 0.02, 7: -0.07}.items():
        w1[0, i] += delta
    s = bucket_analysis({"l": w0}, {"l": w1}, ["l"], RTN(name="rtn_int4", bits=4, group_size=10, symmetric=False))
    approx = lambda x: pytest.approx(x, rel=1e-4, abs=1e-6)
    # sum dw^2 = 0.04^2 + 0.06^2 + 0.02^2 + 0.07^2 = 0.0105 = 105e-4; <q, d> = 0.1*0.06 + 0.1*0.07 = 0.013
    assert s["transfer_coef"] == approx(0.013 / 0.0105)
    assert s["frac_changed"] == 4 / 10
    # changed |w0| = 0, 0.1, 0.4, 0.9 (linear interpolation at 3q): q10 0.03, q50 0.25, q90 0.4 + 0.7 * 0.5
    assert s["abs_w_changed_quantiles"] == {"q10": approx(0.03), "q50": approx(0.25), "q90": approx(0.75)}
    assert s["abs_w_median"] == approx(0.45)  # (0.4 + 0.5) / 2
    # zero code: i1 alone (0.04^2 of the norm, no quantized change); other: the 9 others, <q,d> 0.013 over 0.0089
    assert s["by_code"]["zero"] == {"share_of_weights": 0.1, "share_of_update_norm": approx(16 / 105),
                                    "transfer_coef": 0.0}
    assert s["by_code"]["other"] == {"share_of_weights": 0.9, "share_of_update_norm": approx(89 / 105),
                                     "transfer_coef": approx(0.013 / 0.0089)}
    deciles = s["by_abs_w_decile"]
    assert len(deciles) == 10 and all(g["share_of_weights"] == 0.1 for g in deciles)
    moved = {0: (16, 0.0), 1: (36, 0.1 * 0.06 / 0.0036), 4: (4, 0.0), 7: (49, 0.1 * 0.07 / 0.0049)}
    for k, g in enumerate(deciles):
        share, coef = moved.get(k, (0, None))
        assert g["share_of_update_norm"] == approx(share / 105), k
        assert g["transfer_coef"] == (None if coef is None else approx(coef)), k
    assert (deciles[0]["abs_w_from"], deciles[-1]["abs_w_to"]) == (0.0, approx(1.2))
    assert deciles[7]["abs_w_from"] == approx(0.6 + 0.3 * 0.3) and deciles[7]["abs_w_from"] < 0.9  # edge at 7.2/9


def test_nothing_changed_has_no_quantiles_and_no_shares():
    w = _randn(2, 32)
    s = bucket_analysis({"l": w}, {"l": w.clone()}, ["l"], RTN4)
    assert s["frac_changed"] == 0 and s["abs_w_changed_quantiles"] == {"q10": None, "q50": None, "q90": None}
    assert s["by_code"]["zero"]["share_of_update_norm"] is None and s["by_code"]["other"]["transfer_coef"] is None


@pytest.mark.parametrize("quantizer", [RTN4, NF4, FP4, INT8], ids=lambda q: q.name)
def test_the_zero_code_holds_the_weights_that_quantize_to_zero(quantizer):
    # a block of 64 with absmax 1: 6 weights of +-1e-4 quantize to 0 under every grid (the smallest
    # nonzero levels are 1/15 (RTN over [-0.5, 1]), NF4 0.08, FP4 0.005, int8 1/127 of absmax);
    # the rest sit at +-0.5, far from it. Both FP4 zero codes (+0 and -0) count.
    w0 = torch.full((1, 64), 0.5)
    w0[0, 0], w0[0, 1] = 1.0, -0.5
    w0[0, 10:13], w0[0, 20:23] = 1e-4, -1e-4
    w1 = w0 + 1e-3  # every weight moves by ~ the same amount (float32): shares of the norm ~ of the weights
    s = bucket_analysis({"l": w0}, {"l": w1}, ["l"], quantizer)
    assert s["by_code"]["zero"]["share_of_weights"] == 6 / 64
    assert s["by_code"]["zero"]["share_of_update_norm"] == pytest.approx(6 / 64, rel=1e-3)
    assert s["by_code"]["other"]["share_of_weights"] == 58 / 64
