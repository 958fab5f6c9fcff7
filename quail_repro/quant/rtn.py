"""Round-to-nearest (RTN) fake quantization in pure torch.

Each quantized Linear weight W (out_features x in_features) is cut, row by row, into
groups of ``group_size`` consecutive input columns (``group_size = -1``: one group per
row, i.e. per output channel). Every group g gets its own step ``scale`` (Delta) and
integer zero point, and each weight is replaced by the nearest grid point
``(code - zero) * scale`` (quantize, then dequantize: the model keeps its dtype, only the
values change). Arithmetic is float32; the result is cast back to the weight's dtype.

Two grids, chosen by ``symmetric``:

* asymmetric (``symmetric=False``; the min-max RTN baseline of GPTQ/AWQ, written as in
  the GPTQ reference quantizer): the range is widened to include 0,
  ``lo = min(min(g), 0)``, ``hi = max(max(g), 0)``; ``scale = (hi - lo) / (2^b - 1)``;
  ``zero = round(-lo / scale)`` (an integer in [0, 2^b - 1], so 0 is exactly
  representable); ``code = clamp(round(w / scale) + zero, 0, 2^b - 1)``.
* symmetric (``symmetric=True``; absmax, restricted range as in LLM.int8's absmax):
  ``scale = max|g| / (2^(b-1) - 1)``; ``zero = 0``;
  ``code = clamp(round(w / scale), -(2^(b-1) - 1), 2^(b-1) - 1)``: 2^b - 1 levels
  (15 at 4 bits), symmetric around 0. Note Zhang et al.'s theory section writes
  Delta_int4 = max|w| / 8 (a 16-level grid with one side clipped); this module uses
  max|w| / 7 so that max|w| itself is representable.

In both cases every weight is within scale/2 of its dequantized value. A group that is
all zeros gets scale 1 (its codes all equal its zero point; the values stay 0).
Rounding is torch.round (half to even).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from quail_repro.errors import ConfigError

from .base import WeightQuantizer, check_bool, check_int, check_name, quantizable_linears

MIN_BITS, MAX_BITS = 2, 8
CODE_DTYPE = torch.int16


def check_bits(bits: Any, owner: str = "RTN") -> int:
    bits = check_int(owner, "bits", bits)
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"{owner} option 'bits' must be in {MIN_BITS}..{MAX_BITS}, got {bits}")
    return bits


def check_group_size(group_size: Any, owner: str = "RTN") -> int:
    group_size = check_int(owner, "group_size", group_size)
    if group_size != -1 and group_size <= 0:
        raise ConfigError(
            f"{owner} option 'group_size' must be a positive number of input columns or -1 "
            f"(per output channel), got {group_size}"
        )
    return group_size


def _groups(w: Tensor, group_size: int, layer: str | None) -> tuple[Tensor, int]:
    """w (rows x cols) as float32 (rows x n_groups x g) and the group size g used."""
    if w.dim() != 2:
        raise ValueError(f"RTN quantizes 2-D weights, got shape {tuple(w.shape)}" + (f" ({layer})" if layer else ""))
    rows, cols = w.shape
    g = cols if group_size == -1 else group_size
    if cols % g != 0:
        where = f"layer {layer!r}" if layer else "the weight"
        raise ConfigError(
            f"RTN option 'group_size'={group_size} does not divide the {cols} input columns "
            f"of {where} (weight shape {rows}x{cols})"
        )
    return w.float().reshape(rows, cols // g, g), g


def _validate(bits: int, group_size: int, symmetric: bool) -> None:
    check_bits(bits)
    check_group_size(group_size)
    check_bool("RTN", "symmetric", symmetric)


def _scale_zero(grouped: Tensor, bits: int, symmetric: bool) -> tuple[Tensor, Tensor]:
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = grouped.abs().amax(dim=-1) / qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero = torch.zeros_like(scale)
    else:
        maxq = 2**bits - 1
        lo = grouped.amin(dim=-1).clamp(max=0.0)
        hi = grouped.amax(dim=-1).clamp(min=0.0)
        scale = (hi - lo) / maxq
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero = torch.round(-lo / scale).clamp(0, maxq)
    return scale, zero


def _code_range(bits: int, symmetric: bool) -> tuple[int, int]:
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        return -qmax, qmax
    return 0, 2**bits - 1


def rtn_codes(
    w: Tensor, bits: int, group_size: int, symmetric: bool, *, layer: str | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Integer codes of w on the RTN grid.

    Returns ``(codes, scale, zero)``: ``codes`` has w's shape (int16; 0..2^b-1 when
    asymmetric, -(2^(b-1)-1)..2^(b-1)-1 when symmetric); ``scale`` and ``zero`` are
    float32 of shape (rows, n_groups) (``zero`` is integer-valued, 0 when symmetric).
    The dequantized weight is ``(codes - zero) * scale`` per group (rtn_dequantize).
    ``layer`` only names the weight in error messages.
    """
    _validate(bits, group_size, symmetric)
    grouped, _ = _groups(w, group_size, layer)
    if not torch.isfinite(grouped).all():
        raise ValueError("RTN: weight has NaN/inf values" + (f" ({layer})" if layer else ""))
    scale, zero = _scale_zero(grouped, bits, symmetric)
    lo, hi = _code_range(bits, symmetric)
    codes = (torch.round(grouped / scale.unsqueeze(-1)) + zero.unsqueeze(-1)).clamp(lo, hi)
    return codes.reshape(w.shape).to(CODE_DTYPE), scale, zero


def expand_groups(t: Tensor, shape: torch.Size | tuple[int, int]) -> Tensor:
    """Broadcast a per-group tensor (rows x n_groups) to one value per weight (``shape``)."""
    rows, cols = shape
    n_groups = t.shape[-1]
    return t.unsqueeze(-1).expand(rows, n_groups, cols // n_groups).reshape(rows, cols)


def rtn_dequantize(codes: Tensor, scale: Tensor, zero: Tensor) -> Tensor:
    """Float32 weights ``(codes - zero) * scale`` from rtn_codes' outputs."""
    rows, cols = codes.shape
    n_groups = scale.shape[-1]
    grouped = codes.float().reshape(rows, n_groups, cols // n_groups)
    return ((grouped - zero.unsqueeze(-1)) * scale.unsqueeze(-1)).reshape(rows, cols)


def rtn_quantize(w: Tensor, bits: int, group_size: int, symmetric: bool, *, layer: str | None = None) -> Tensor:
    """The fake-quantized weight: w snapped to its RTN grid, in w's dtype."""
    codes, scale, zero = rtn_codes(w, bits, group_size, symmetric, layer=layer)
    return rtn_dequantize(codes, scale, zero).to(w.dtype)


def quant_step(w: Tensor, bits: int, group_size: int, symmetric: bool, *, layer: str | None = None) -> Tensor:
    """The step Delta of each group: float32 (rows x n_groups). expand_groups gives one per weight."""
    _validate(bits, group_size, symmetric)
    grouped, _ = _groups(w, group_size, layer)
    scale, _ = _scale_zero(grouped, bits, symmetric)
    return scale


class RTN(WeightQuantizer):
    """Round-to-nearest fake quantization of every quantizable Linear (see base.py).

    Config example::

        _target_: quail_repro.quant.RTN
        name: rtn_int4_g128
        bits: 4            # 2..8
        group_size: 128    # input columns per group; -1 = per output channel
        symmetric: false   # false: min-max with zero point (GPTQ/AWQ RTN); true: absmax
    """

    def __init__(self, name: str, bits: int, group_size: int, symmetric: bool):
        self.name = check_name("RTN", name)
        self.bits = check_bits(bits)
        self.group_size = check_group_size(group_size)
        self.symmetric = check_bool("RTN", "symmetric", symmetric)

    def quantize_model(self, model: nn.Module) -> list[str]:
        """Fake-quantize ``model`` in place; returns the names of the quantized modules."""
        from transformers.pytorch_utils import Conv1D

        done = []
        with torch.no_grad():
            for name, module in list(quantizable_linears(model)):
                weight = module.weight
                transpose = isinstance(module, Conv1D)  # Conv1D stores (in, out)
                w = weight.data.t() if transpose else weight.data
                q = rtn_quantize(w, self.bits, self.group_size, self.symmetric, layer=name)
                weight.data.copy_(q.t() if transpose else q)
                done.append(name)
        if not done:
            raise ConfigError("RTN: the model has no Linear layer to quantize")
        return done

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": "rtn",
            "bits": self.bits,
            "group_size": self.group_size,
            "symmetric": self.symmetric,
            "grid": (
                "absmax/(2^(b-1)-1), codes -(2^(b-1)-1)..2^(b-1)-1"
                if self.symmetric
                else "min-max incl. 0, (hi-lo)/(2^b-1), integer zero point, codes 0..2^b-1"
            ),
            "rounding": "half-to-even, float32",
            "modules": "all Linear except lm_head/tied/output embeddings",
        }
