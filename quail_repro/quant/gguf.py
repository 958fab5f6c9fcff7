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
models all the same); Delta is |d|.
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
        header = np.ascontiguousarray(packed.reshape(-1, self.type_size)[:, :4])
        d = header[:, :2].copy().view(np.float16).astype(np.float32)  # one per block, column vector
        m = header[:, 2:4].copy().view(np.float16).astype(np.float32) if FORMATS[self.qtype] else np.zeros_like(d)
        v = values.reshape(-1, self.block_size)
        safe = np.where(d == 0, 1, d)  # an all-zero block: d = 0, every code 0
        codes = np.where(d == 0, 0, np.rint((v - m) / safe))
        zero = np.where(d == 0, 0, np.rint(-m / safe))  # 0 for the _0 formats; the code nearest 0 for _1
        shape = weight.shape

        def per_weight(a, dtype=torch.float32):  # on the weight's device, as the other quantizers' codes
            return torch.from_numpy(np.broadcast_to(a, v.shape).reshape(shape).copy()).to(weight.device, dtype)

        return (per_weight(codes, torch.int16), per_weight(v), per_weight(np.abs(d)), per_weight(zero, torch.int16))

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
