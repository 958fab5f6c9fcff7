"""Bucket analysis (QUAIL, section "why quantization undoes unlearning"; science.md 1, 4).

For an unlearned model against its target and one quantizer: how many quantized weights
kept their code ("bucket overlap"), and how large the updates |dw| are relative to the
quantization step Delta. Codes come from the same helpers the quantizers use
(quail_repro.quant), so the analysis describes what the evaluation saw.

What is compared, per quantizer:

* RTN: the integer codes of ``rtn_codes``; Delta = the group's step (``quant_step``).
* bitsandbytes 4-bit: the codes of ``bnb_4bit_codes`` mapped to their value in the code
  table (in [-1, 1], before the block's absmax). For NF4 that is the raw code; FP4 has two
  codes for zero (+0 and -0) and a weight near 0 can flip between them without changing
  its value, so comparing table values counts that as "same bucket". NF4 and FP4 grids are
  non-uniform, so there is no single step: Delta = block absmax x the mean spacing of the
  table's distinct values ((max - min) / (n_distinct - 1): 2/15 for NF4, 2/14 for FP4),
  i.e. the step of a uniform grid with as many levels over the same range. The real
  spacing is narrower near zero and wider at the tails (NF4 0.08..0.28, FP4 0.005..0.33).
* bitsandbytes 8-bit: the int8 codes of ``bnb_int8_codes`` (row absmax of the fp16-cast
  weight); Delta = row absmax / 127.
* llama.cpp's formats (quant/gguf.py): the codes stored in each block of 32, read back from the
  gguf package's own round trip; Delta = the block's scale d.

Codes ignore a change of the group/block scale. ``value_overlap`` (fraction of weights
whose dequantized value is identical) includes it: it is the stricter "the evaluated
weight did not change at all". Delta in ``frac_below_half_step`` and ``median_step`` is
the TARGET's. Percentiles are exact (numpy.quantile, linear interpolation as in
torch.quantile, which refuses inputs above 2^24 elements); this holds all |dw| of the
analysed layers in memory as float32 (4 bytes per weight).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from quail_repro.errors import ConfigError
from quail_repro.losses import IGNORE_INDEX, logit_distance
from quail_repro.train import CAUSAL_LM, Task
from quail_repro.quant import (
    RTN,
    BitsAndBytes,
    as_dtype,
    bnb_4bit_code_table,
    bnb_4bit_codes,
    bnb_4bit_dequantize,
    bnb_int8_codes,
    bnb_int8_dequantize,
    expand_groups,
    quantizable_linears,
    rtn_codes,
    rtn_dequantize,
)



#: groups of by_abs_w_decile, and the quantiles of |w0| over the changed weights (analyse_buckets)
DECILES = 10
CHANGED_QUANTILES = {"q10": 0.1, "q50": 0.5, "q90": 0.9}


# -- codes -------------------------------------------------------------------------------


class _Quantized(NamedTuple):
    codes: Tensor  # comparable between two models (see the module doc)
    values: Tensor  # dequantized, float32
    step: Tensor  # Delta per weight
    zero_code: Tensor  # the code that holds 0, per weight or one for all (broadcasts against codes)


def _quantize(quantizer, weight: Tensor, dtype: torch.dtype | str | None = None) -> _Quantized:
    """One Linear weight (out x in) under an RTN or BitsAndBytes quantizer."""
    if dtype is not None:  # the evaluation quantizes the weight as loaded, in this dtype
        weight = weight.to(as_dtype(dtype))
    if hasattr(quantizer, "bucket_codes"):  # a quantizer that reads its own codes back (quant/gguf.py)
        return _Quantized(*quantizer.bucket_codes(weight))
    if isinstance(quantizer, RTN):
        args = (quantizer.bits, quantizer.group_size, quantizer.symmetric)
        codes, scale, zero = rtn_codes(weight, *args)
        return _Quantized(codes, rtn_dequantize(codes, scale, zero), expand_groups(scale, weight.shape),
                          expand_groups(zero, weight.shape))
    if isinstance(quantizer, BitsAndBytes) and quantizer.bits == 4:
        qt, bs = quantizer.quant_type, quantizer.blocksize
        codes, absmax = bnb_4bit_codes(weight, quant_type=qt, blocksize=bs)
        table = bnb_4bit_code_table(qt, device=codes.device)
        levels = table.unique()  # FP4's +0 and -0 are one value
        spacing = (levels.max() - levels.min()) / (levels.numel() - 1)
        per_weight_absmax = absmax.repeat_interleave(bs)[: weight.numel()].reshape(weight.shape)
        values = bnb_4bit_dequantize(codes, absmax, quant_type=qt, blocksize=bs)
        # codes are table values, so "holds 0" is the value 0 (both of FP4's zero codes)
        return _Quantized(table[codes.long()], values, per_weight_absmax * spacing, table.new_zeros(()))
    if isinstance(quantizer, BitsAndBytes) and quantizer.bits == 8:
        codes, row_absmax = bnb_int8_codes(weight)
        step = (row_absmax / 127.0).unsqueeze(-1).expand(weight.shape)
        return _Quantized(codes, bnb_int8_dequantize(codes, row_absmax), step, codes.new_zeros(()))
    raise ConfigError(
        f"bucket analysis needs an RTN or BitsAndBytes quantizer, got {type(quantizer).__name__} "
        f"({getattr(quantizer, 'name', '?')}); full precision has no buckets"
    )


def quantizer_codes(quantizer, weight: Tensor, *, dtype: torch.dtype | str | None = None) -> tuple[Tensor, Tensor]:
    """(codes or code values comparable between two models, per-weight step Delta) for one
    Linear weight (out x in) under an RTN or BitsAndBytes quantizer (see the module doc).
    ``dtype``: the dtype the evaluation loads the model at (weights are cast to it before
    quantizing, as the load does); None quantizes the weight as given."""
    q = _quantize(quantizer, weight, dtype)
    return q.codes, q.step


def quantized_values(quantizer, weight: Tensor) -> Tensor:
    """One Linear weight as the quantizer's grid gives it back (dequantized, float32): what a
    quantized model computes with (quail_repro.fakequant)."""
    return _quantize(quantizer, weight).values


def layer_names_for(model: nn.Module) -> list[str]:
    """State-dict names of the weights the quantizers really quantize (not lm_head, norms, embeddings)."""
    names = []
    for name, module in quantizable_linears(model):
        if type(module) is not nn.Linear:  # GPT-2 Conv1D stores (in, out): groups would run along the wrong axis
            raise ConfigError(f"bucket analysis supports nn.Linear weights only; {name} is {type(module).__name__}")
        names.append(name + ".weight")
    return names


# -- statistics --------------------------------------------------------------------------


def _pair(target_state: dict, unlearned_state: dict, name: str) -> tuple[Tensor, Tensor]:
    for label, state in (("target", target_state), ("unlearned", unlearned_state)):
        if name not in state:
            raise KeyError(f"{name!r} is not in the {label} state dict")
    w0, w1 = target_state[name], unlearned_state[name]
    if w0.shape != w1.shape:
        raise ValueError(f"{name}: target shape {tuple(w0.shape)} != unlearned {tuple(w1.shape)}")
    return w0.detach(), w1.detach().to(w0.device)


def _abs_dw(w0: Tensor, w1: Tensor) -> Tensor:
    return (w1.float() - w0.float()).abs().flatten()


def analyse_buckets(
    target_state: dict[str, Tensor],
    unlearned_state: dict[str, Tensor],
    layer_names: list[str],
    quantizer,
    *,
    dtype: torch.dtype | str | None = None,
) -> tuple[dict[str, Any], Tensor]:
    """Bucket overlap and |dw| statistics over ``layer_names`` (see the module doc), and
    |dw| / Delta per weight (target's Delta, float32 on CPU), from one quantization pass.

    |dw| is the update as stored (float32 difference); codes are taken after casting to
    ``dtype`` when given (see quantizer_codes). Returns bucket_overlap, value_overlap,
    median/mean/p99/max_abs_dw, frac_below_half_step (|dw| < target Delta / 2),
    median_step, n_weights, update_l2 (||w1 - w0||_2 over the analysed layers), the update
    transfer (transfer_coef, transfer_cos: of the
    quantized update Q(w1) - Q(w0) onto dw, overall and ``_flipped``: only the weights
    whose code changed) and per_layer {name: {bucket_overlap, median_abs_dw,
    frac_below_half_step, transfer_coef, transfer_cos}}.

    Where the update lives (bf16 storage can only move weights whose update exceeds half
    their resolution, |w|/256; science.md section 5): frac_changed (w1 != w0 exactly),
    abs_w_changed_quantiles {q10, q50, q90} (|w0| of the changed weights; None when none
    changed), abs_w_median (|w0| of all analysed weights), and the same three numbers,
    share_of_weights, share_of_update_norm (the group's sum of dw^2 over the total) and
    transfer_coef, for two splits: by_code {"zero": weights whose target code is the one
    that holds 0 (RTN: the zero point; bnb 4-bit: the table value 0, both of FP4's; int8:
    0), "other"} and by_abs_w_decile (10 groups by the deciles of |w0| over the analysed
    weights, each with its |w0| range abs_w_from..abs_w_to; ties make shares differ from 0.1).
    """
    if not layer_names:
        raise ValueError("bucket_analysis: no layers to analyse")
    per_layer, all_dw, all_step, ratios, changed_abs_w = {}, [], [], [], []
    n = same_code = same_value = below = 0
    overall, flipped = _Transfer(), _Transfer()
    abs_w = torch.cat([_pair(target_state, unlearned_state, name)[0].float().abs().flatten().cpu()
                       for name in layer_names]).numpy()
    edges = np.quantile(abs_w, np.arange(1, DECILES) / DECILES)
    bounds = [float(abs_w.min()), *map(float, edges), float(abs_w.max())]
    abs_w_median = float(np.median(abs_w))
    del abs_w  # a transient copy, 4 bytes per weight
    by_code, by_decile = _Split(2), _Split(DECILES)
    for name in layer_names:
        w0, w1 = _pair(target_state, unlearned_state, name)
        (c0, v0, step, zero_code), (c1, v1, _, _) = _quantize(quantizer, w0, dtype), _quantize(quantizer, w1, dtype)
        dw = _abs_dw(w0, w1).cpu()
        step = step.flatten().float().cpu()
        k_code, k_value = int((c0 == c1).sum()), int((v0 == v1).sum())
        k_below = int((dw < step / 2).sum())
        d, q = (w1.float() - w0.float()).flatten(), (v1 - v0).flatten().to(w0.device)
        layer = _Transfer().add(d, q)
        overall.add(d, q)
        flip = (c0 != c1).flatten()
        flipped.add(d[flip], q[flip])
        a = w0.double().abs().flatten()  # float64, as the edges: no weight changes decile by rounding
        changed_abs_w.append(a[d != 0].float().cpu())
        by_code.add((c0 != zero_code).flatten().long().to(d.device), d, q)  # 0: the code that holds 0
        by_decile.add(torch.bucketize(a, torch.as_tensor(edges, dtype=torch.float64, device=a.device), right=True),
                      d, q)
        per_layer[name] = {
            "bucket_overlap": k_code / dw.numel(),
            "median_abs_dw": float(np.median(dw.numpy())),
            "frac_below_half_step": k_below / dw.numel(),
            **layer.summary(),
        }
        n, same_code, same_value, below = n + dw.numel(), same_code + k_code, same_value + k_value, below + k_below
        all_dw.append(dw)
        all_step.append(step)
        ratios.append(dw / step)
    dw = torch.cat(all_dw).numpy()
    median, p99 = np.quantile(dw, [0.5, 0.99])
    stats = {
        "bucket_overlap": same_code / n,
        "value_overlap": same_value / n,
        "median_abs_dw": float(median),
        "mean_abs_dw": float(dw.mean(dtype=np.float64)),
        "p99_abs_dw": float(p99),
        "max_abs_dw": float(dw.max()),
        "frac_below_half_step": below / n,
        "median_step": float(np.median(torch.cat(all_step).numpy())),
        "n_weights": n,
        "update_l2": overall.dd ** 0.5,
        **overall.summary(),
        **{f"{k}_flipped": v for k, v in flipped.summary().items()},
        **_where_the_update_lives(torch.cat(changed_abs_w).numpy(), n, abs_w_median, by_code, by_decile, bounds),
        "per_layer": per_layer,
    }
    return stats, torch.cat(ratios)


def _where_the_update_lives(changed_abs_w: np.ndarray, n: int, abs_w_median: float, by_code: "_Split",
                            by_decile: "_Split", bounds: list[float]) -> dict[str, Any]:
    """The statistics of analyse_buckets' second paragraph, from its accumulators."""
    quantiles = (np.quantile(changed_abs_w, list(CHANGED_QUANTILES.values())) if changed_abs_w.size
                 else [None] * len(CHANGED_QUANTILES))
    zero, other = by_code.summary()
    return {
        "frac_changed": changed_abs_w.size / n,
        "abs_w_changed_quantiles": {k: None if v is None else float(v) for k, v in zip(CHANGED_QUANTILES, quantiles)},
        "abs_w_median": abs_w_median,
        "by_code": {"zero": zero, "other": other},
        "by_abs_w_decile": [{"abs_w_from": lo, "abs_w_to": hi, **group}
                            for lo, hi, group in zip(bounds[:-1], bounds[1:], by_decile.summary())],
    }


def bucket_analysis(target_state: dict[str, Tensor], unlearned_state: dict[str, Tensor], layer_names: list[str],
                    quantizer, *, dtype: torch.dtype | str | None = None) -> dict[str, Any]:
    """The statistics of analyse_buckets."""
    return analyse_buckets(target_state, unlearned_state, layer_names, quantizer, dtype=dtype)[0]


class _Transfer:
    """How much of the full-precision update d survives as the quantized update q.

    coefficient <q, d> / <d, d> (1: quantization carries the update on average, as
    unbiased rounding would; 0: the quantized models are equal) and cosine(q, d).
    None where undefined (no update, or no quantized change for the cosine).
    """

    def __init__(self):
        self.qd = self.dd = self.qq = 0.0

    def add(self, d: Tensor, q: Tensor) -> "_Transfer":
        d, q = d.double(), q.double()
        self.qd += float((q * d).sum())
        self.dd += float((d * d).sum())
        self.qq += float((q * q).sum())
        return self

    def summary(self) -> dict[str, float | None]:
        coef = self.qd / self.dd if self.dd > 0 else None
        cos = self.qd / (self.qq * self.dd) ** 0.5 if self.dd > 0 and self.qq > 0 else None
        return {"transfer_coef": coef, "transfer_cos": cos}


class _Split:
    """Weights put into groups by an index (0..n_groups-1): per group its share of the weights,
    its share of the update's squared norm sum(dw^2), and its transfer coefficient <q, d> / <d, d>
    (None where the group has no update)."""

    def __init__(self, n_groups: int):
        self.count, self.dd, self.qd = np.zeros(n_groups), np.zeros(n_groups), np.zeros(n_groups)

    def add(self, index: Tensor, d: Tensor, q: Tensor) -> None:
        d, q = d.double(), q.double()
        for total, weights in ((self.count, None), (self.dd, d * d), (self.qd, q * d)):
            total += torch.bincount(index, weights=weights, minlength=total.size).cpu().numpy()

    def summary(self) -> list[dict[str, float | None]]:
        n, dd = self.count.sum(), self.dd.sum()
        return [{"share_of_weights": float(k / n), "share_of_update_norm": float(e / dd) if dd > 0 else None,
                 "transfer_coef": float(c / e) if e > 0 else None}
                for k, e, c in zip(self.count, self.dd, self.qd)]


def dw_in_steps(target_state: dict[str, Tensor], unlearned_state: dict[str, Tensor], layer_names: list[str],
                quantizer, *, dtype: torch.dtype | str | None = None) -> Tensor:
    """Each weight's |dw| in units of its quantization step Delta (analyse_buckets' second value):
    every weight of ``layer_names``, float32 on CPU."""
    return analyse_buckets(target_state, unlearned_state, layer_names, quantizer, dtype=dtype)[1]


#: the |dw|/Delta histogram's fixed log10 range and bin count (0.05 decade per bin): a few KB per
#: analysis whatever the model's size (the per-weight array is ~4 bytes per weight: 800 MB at width 2048)
DW_LOG10_RANGE, DW_BINS = (-8.0, 4.0), 240


def dw_histogram(ratios: Tensor) -> dict:
    """|dw|/Delta of every weight as counts over DW_BINS equal bins of log10 in DW_LOG10_RANGE
    (values outside fall into the end bins), plus how many are exactly 0 (no log) and in all."""
    positive = ratios[ratios > 0].double()
    lo, hi = DW_LOG10_RANGE
    logs = positive.log10().clamp(lo, hi)
    counts = torch.histc(logs, bins=DW_BINS, min=lo, max=hi) if logs.numel() else torch.zeros(DW_BINS)
    return {"log10_range": [lo, hi], "counts": [int(c) for c in counts.tolist()],
            "zeros": int(ratios.numel() - positive.numel()), "total": int(ratios.numel())}


# -- logits ------------------------------------------------------------------------------


@torch.no_grad()
def logit_shifts(model_a, model_b, blocks: Tensor, kinds: tuple[str, ...] = ("l2",),
                 batch_size: int = 8, task: Task = CAUSAL_LM) -> dict[str, float]:
    """Mean over forget tokens of each logit_distance kind between two causal LMs.

    ``model_b`` is the reference (for ``kl``: KL(p_b || p_a)). ``blocks``: [n, seq_len]
    token ids with -100 padding (train.pack). A "forget token" is a position whose next
    token is not padding (the positions the loss scores). One forward pass per batch
    serves every kind. A classifier (``task`` classification.CLASSIFICATION, ``blocks`` its Examples)
    has one scored position per post: its class logits.
    """
    totals, count = dict.fromkeys(kinds, 0.0), 0
    for i in range(0, len(blocks), batch_size):
        a, b = (task.outputs(m, task.batch(blocks[i:i + batch_size], next(m.parameters()).device))
                for m in (model_a, model_b))
        mask = a.targets != IGNORE_INDEX
        for kind in kinds:
            d = logit_distance(a.logits, b.logits.to(a.logits.device), kind)
            totals[kind] += float(d[mask.to(d.device)].double().sum())
        count += int(mask.sum())
    if count == 0:
        raise ValueError("logit_shifts: blocks contain no scored tokens")
    return {kind: total / count for kind, total in totals.items()}
