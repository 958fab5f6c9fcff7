"""The quantization stage: ways to load a saved model at a precision.

Quantizers (built from Hydra configs with ``_target_``):

* ``FullPrecision(name="none")``
* ``RTN(name, bits, group_size, symmetric)``: pure-torch round-to-nearest fake quantization
* ``BitsAndBytes4bit(name, quant_type, compute_dtype, double_quant, blocksize,
  cpu_bf16_kernel)`` and ``BitsAndBytes8bit(name, int8_threshold)``: real bitsandbytes at
  load time (both subclasses of ``BitsAndBytes``; ``bits`` optional, must match)

Each has ``load(path, *, dtype, device) -> model`` and ``describe() -> dict``.
The RTN and bitsandbytes code functions below serve bucket-overlap analyses.
bitsandbytes itself is imported only when a bitsandbytes function is called.
"""

from .base import FullPrecision, Quantizer, as_dtype, load_full_precision, quantizable_linears, skipped_linears
from .bnb import BitsAndBytes, BitsAndBytes4bit, BitsAndBytes8bit
from .bnb_codes import (
    bnb_4bit_code_table,
    bnb_4bit_codes,
    bnb_4bit_dequantize,
    bnb_int8_codes,
    bnb_int8_dequantize,
    silence_bnb_noise,
)
from .rtn import RTN, expand_groups, quant_step, rtn_codes, rtn_dequantize, rtn_quantize

__all__ = [
    "Quantizer",
    "FullPrecision",
    "RTN",
    "BitsAndBytes",
    "BitsAndBytes4bit",
    "BitsAndBytes8bit",
    "as_dtype",
    "load_full_precision",
    "quantizable_linears",
    "skipped_linears",
    "rtn_codes",
    "rtn_dequantize",
    "rtn_quantize",
    "quant_step",
    "expand_groups",
    "bnb_4bit_code_table",
    "bnb_4bit_codes",
    "bnb_4bit_dequantize",
    "bnb_int8_codes",
    "bnb_int8_dequantize",
    "silence_bnb_noise",
]
