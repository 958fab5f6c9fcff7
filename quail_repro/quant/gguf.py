"""llama.cpp's block formats Q8_0, Q5_0, Q5_1, Q4_0, Q4_1, through the ``gguf`` package.

``gguf`` (maintained in the llama.cpp repository) quantizes and dequantizes these formats in
NumPy, bit for bit as llama.cpp's reference C code. Every quantizable Linear (quant/base.py:
all but the output head) is fake-quantized: ``dequantize(quantize(w))``, written back in the
weight's dtype. Each row is cut into blocks of 32 weights; a block stores an fp16 scale d and,
for the ``_1`` formats, an fp16 minimum m, then one code q per weight:

* ``Q8_0``: value d*q, q in -127..127 (d = absmax/127);
* ``Q4_0`` / ``Q5_0``: value d*(q - 8) / d*(q - 16) (d = the signed absmax / -8 / -16);
* ``Q4_1`` / ``Q5_1``: value d*q + m, q in 0..15 / 0..31 (d = (max - min)/15 / 31).

For the bucket analysis (``bucket_codes``) the code of a weight is (value - m)/d, read back
from the package's own dequantized value and the block header (d, m) of its bytes, so the
codes are exactly the ones llama.cpp stores (offset by 8 or 16 for _0: comparable between two
models all the same); Delta is |d|. ``block_grid`` reads the same from the headers of the
k-quants too (their sub-block scales), for llama.cpp's own files (quant/llama_cpp.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from quail_repro.errors import ConfigError, QuantizerUnavailable

from .base import WeightQuantizer, check_name, quantizable_linears

#: the formats whose blocks start with an fp16 scale d (and, for _1, an fp16 minimum m)
FORMATS = {"Q8_0": False, "Q5_0": False, "Q4_0": False, "Q5_1": True, "Q4_1": True}  # has a minimum


def _gguf():
    try:
        import gguf
    except ImportError as err:  # a dependency (requirements.txt); missing only in a partial install
        raise QuantizerUnavailable("the gguf quantizers need the gguf package: pip install gguf") from err
    return gguf


#: per block type, the range of the codes bucket_codes reports: value = step * code + offset. The
#: _0 formats and Q6_K are centred (llama.cpp stores q - 8, q - 16, q - 32 shifted up), so their
#: code 0 is the value 0; the _1 formats and the k-quants 4 and 5 have a minimum (the offset)
CODE_RANGE = {"Q8_0": (-128, 127), "Q4_0": (-8, 7), "Q5_0": (-16, 15), "Q4_1": (0, 15), "Q5_1": (0, 31),
              "Q4_K": (0, 15), "Q5_K": (0, 31), "Q6_K": (-32, 31)}


def _f16(raw: np.ndarray, start: int) -> np.ndarray:
    return raw[:, start:start + 2].copy().view(np.float16).astype(np.float32)  # (blocks, 1)


def block_grid(kind: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The grid each stored weight lies on, read from the blocks' headers: (step, offset) per
    weight, shaped (sub-blocks, weights per sub-block), so that value = step * code + offset with an
    integer code in CODE_RANGE[kind] (Q6_K's scales are signed, so its step can be negative).
    ``raw``: the tensor's bytes (rows x bytes per row)."""
    if kind not in CODE_RANGE:
        raise ConfigError(f"no block grid for GGUF type {kind}")
    gguf = _gguf()
    size, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]]
    blocks = np.ascontiguousarray(raw).view(np.uint8).reshape(-1, type_size)
    if kind in ("Q4_K", "Q5_K"):  # eight sub-blocks of 32, a 6-bit scale and minimum each
        sc, m = gguf.quants.Q4_K.get_scale_min(blocks[:, 4:16])
        step, offset = _f16(blocks, 0) * sc, -_f16(blocks, 2) * m
    elif kind == "Q6_K":  # sixteen sub-blocks of 16 with int8 scales, after ql, qh (192 bytes)
        step = _f16(blocks, 208) * blocks[:, 192:208].view(np.int8).astype(np.float32)
        offset = np.zeros_like(step)
    else:  # one block of 32: an fp16 scale d, then for the _1 formats an fp16 minimum m
        step = _f16(blocks, 0)
        offset = _f16(blocks, 2) if FORMATS.get(kind) else np.zeros_like(step)
    per_sub = size // step.shape[1]
    return np.repeat(step.reshape(-1, 1), per_sub, axis=1), np.repeat(offset.reshape(-1, 1), per_sub, axis=1)


def codes_on_grid(kind: str, raw: np.ndarray, values: np.ndarray, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(codes, dequantized values, step Delta = |step|, the code nearest 0), each per weight in
    ``like``'s shape and on its device: what analysis.quantizer_codes compares between two models.
    An all-zero block (step 0) has every code 0."""
    step, offset = block_grid(kind, raw)
    v = values.reshape(step.shape)
    safe = np.where(step == 0, 1, step)
    codes = np.where(step == 0, 0, np.rint((v - offset) / safe))
    zero = np.where(step == 0, 0, np.rint(-offset / safe))

    def per_weight(a, dtype=torch.float32):
        return torch.from_numpy(np.ascontiguousarray(a).reshape(like.shape)).to(like.device, dtype)

    return per_weight(codes, torch.int16), per_weight(v), per_weight(np.abs(step)), per_weight(zero, torch.int16)


class GGUF(WeightQuantizer):
    """Fake quantization with one of llama.cpp's block formats (see the module doc).

    Config::

        _target_: quail_repro.quant.gguf.GGUF
        name: gguf_q4_0
        qtype: Q4_0      # Q8_0 | Q5_0 | Q5_1 | Q4_0 | Q4_1
    """

    def __init__(self, name: str, qtype: str):
        self.name = check_name("GGUF", name)
        if qtype not in FORMATS:
            raise ConfigError(f"GGUF option 'qtype'={qtype!r}: choose one of {list(FORMATS)}")
        self.qtype = qtype
        gguf = _gguf()
        self._type = gguf.GGMLQuantizationType[qtype]
        self.block_size, self.type_size = gguf.GGML_QUANT_SIZES[self._type]

    def _blocks(self, weight: Tensor, layer: str | None) -> np.ndarray:
        if weight.dim() != 2 or weight.shape[1] % self.block_size:
            where = f" ({layer})" if layer else ""
            raise ConfigError(f"{self.name}: {self.qtype} quantizes rows in blocks of {self.block_size}; the weight "
                              f"of shape {tuple(weight.shape)}{where} has rows of another length")
        return weight.detach().float().cpu().numpy()

    def round_trip(self, weight: Tensor, *, layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(the packed bytes, rows x bytes per row; the dequantized float32 weight) from the gguf package."""
        gguf = _gguf()
        packed = gguf.quants.quantize(self._blocks(weight, layer), self._type)
        return packed, gguf.quants.dequantize(packed, self._type)

    def bucket_codes(self, weight: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(codes, dequantized values, step Delta, the code nearest 0), each per weight in
        weight's shape: what analysis.quantizer_codes compares between two models."""
        packed, values = self.round_trip(weight)
        return codes_on_grid(self.qtype, packed, values, weight)

    def quantize_model(self, model: nn.Module) -> list[str]:
        """Fake-quantize ``model`` in place; returns the names of the quantized modules."""
        done = []
        with torch.no_grad():
            for name, module in list(quantizable_linears(model)):
                if type(module) is not nn.Linear:  # GPT-2 Conv1D stores (in, out): blocks would run along columns
                    raise ConfigError(f"{self.name}: quantizes nn.Linear weights only; {name} is {type(module).__name__}")
                _, values = self.round_trip(module.weight, layer=name)
                module.weight.copy_(torch.from_numpy(values).to(module.weight.dtype))
                done.append(name)
        if not done:
            raise ConfigError(f"{self.name}: the model has no Linear layer to quantize")
        return done

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "method": "gguf", "qtype": self.qtype, "block_size": self.block_size,
                "gguf": _gguf_version(), "modules": "all Linear except lm_head/tied/output embeddings"}


def _gguf_version() -> str:
    from importlib.metadata import version

    return version("gguf")  # in the cache key: another gguf release may round differently
