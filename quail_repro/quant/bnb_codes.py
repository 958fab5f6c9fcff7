"""bitsandbytes' own weight codes, for the bucket analysis (quail_repro/analysis.py): the
codes a model loaded by ``BitsAndBytes4bit``/``BitsAndBytes8bit`` really holds, computed with
the library's own quantize functions. bitsandbytes is imported only when a function is called."""
from __future__ import annotations

import logging

import torch
from torch import Tensor

from quail_repro.errors import ConfigError, QuantizerUnavailable

QUANT_TYPES = ("nf4", "fp4")
_INT8_CAST_LOGGER = "bitsandbytes.autograd._functions"
_INT8_CAST_MESSAGE = "MatMul8bitLt: inputs will be cast"
_CPU_KERNEL_LOGGER = "bitsandbytes.backends.cpu.ops"
_CPU_KERNEL_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"


class _DropMessage(logging.Filter):
    """Drops the log records whose message starts with ``prefix``; keeps the rest."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def _install_filter(logger_name: str, prefix: str) -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _DropMessage) and f.prefix == prefix for f in logger.filters):
        logger.addFilter(_DropMessage(prefix))


def silence_bnb_noise() -> None:
    """Filter the 8-bit per-call cast warning and the one-off note that the optional
    `kernels` package (a Hub download of a CPU kernel) is missing; other bitsandbytes
    log messages still show."""
    _install_filter(_INT8_CAST_LOGGER, _INT8_CAST_MESSAGE)
    _install_filter(_CPU_KERNEL_LOGGER, _CPU_KERNEL_MESSAGE)


def import_bnb():
    """The bitsandbytes module, or QuantizerUnavailable saying why it cannot be imported."""
    silence_bnb_noise()
    try:
        import bitsandbytes as bnb
    except Exception as exc:  # ImportError, or a broken native library
        raise QuantizerUnavailable(f"bitsandbytes cannot be imported: {type(exc).__name__}: {exc}") from exc
    return bnb


# ---------------------------------------------------------------------------------------
# Codes, for bucket-overlap analyses
# ---------------------------------------------------------------------------------------


def bnb_4bit_code_table(quant_type: str, device: str | torch.device = "cpu") -> Tensor:
    """The 16 values (in [-1, 1], float32) a 4-bit code indexes, in code order."""
    if quant_type not in QUANT_TYPES:
        raise ConfigError(f"quant_type must be one of {QUANT_TYPES}, got {quant_type!r}")
    bnb = import_bnb()
    return bnb.functional.get_4bit_type(quant_type, device=device).float()


def bnb_4bit_codes(w: Tensor, *, quant_type: str, blocksize: int) -> tuple[Tensor, Tensor]:
    """The 4-bit codes bitsandbytes gives ``w``: ``(codes, absmax)``.

    ``codes``: uint8 of w's shape, one code (0..15, an index into bnb_4bit_code_table) per
    weight; FP4 has two codes for zero (0 = +0, 8 = -0), so compare values
    (``table[codes]``), not raw codes, where that matters. ``absmax``: float32, one per
    block of ``blocksize`` consecutive elements of the row-major flattened w (the last
    block may be shorter). Uses
    ``bitsandbytes.functional.quantize_4bit`` without double quantization (double
    quantization compresses absmax afterwards; the weight codes are the same). Pass w in
    the dtype the model is loaded at: Params4bit quantizes the weight in that dtype.
    """
    if quant_type not in QUANT_TYPES:
        raise ConfigError(f"quant_type must be one of {QUANT_TYPES}, got {quant_type!r}")
    bnb = import_bnb()
    packed, state = bnb.functional.quantize_4bit(
        w.contiguous(),
        blocksize=blocksize,
        compress_statistics=False,
        quant_type=quant_type,
        quant_storage=torch.uint8,
    )
    packed = packed.reshape(-1)
    codes = torch.empty(packed.numel() * 2, dtype=torch.uint8, device=packed.device)
    codes[0::2] = packed >> 4  # bitsandbytes packs the first of each pair in the high nibble
    codes[1::2] = packed & 0xF
    return codes[: w.numel()].reshape(w.shape), state.absmax.float()


def bnb_4bit_dequantize(codes: Tensor, absmax: Tensor, *, quant_type: str, blocksize: int) -> Tensor:
    """Float32 weights from bnb_4bit_codes' outputs (code value x block absmax)."""
    table = bnb_4bit_code_table(quant_type, device=codes.device)
    flat = table[codes.reshape(-1).long()]
    scale = absmax.float().repeat_interleave(blocksize)[: flat.numel()]
    return (flat * scale).reshape(codes.shape)


def bnb_int8_codes(w: Tensor) -> tuple[Tensor, Tensor]:
    """The int8 codes Linear8bitLt gives a weight ``w`` (out x in): ``(codes, row_absmax)``.

    As ``Int8Params`` does: w is cast to float16, then ``int8_vectorwise_quant`` (row-wise
    absmax, no outlier threshold): ``codes = round(w * 127 / row_absmax)`` (int8, w's
    shape), ``row_absmax`` float32 of shape (out,).
    """
    bnb = import_bnb()
    codes, row_absmax, _ = bnb.functional.int8_vectorwise_quant(w.contiguous().to(torch.float16))
    return codes, row_absmax.float()


def bnb_int8_dequantize(codes: Tensor, row_absmax: Tensor) -> Tensor:
    """Float32 weights from bnb_int8_codes' outputs."""
    return codes.float() * (row_absmax.float().unsqueeze(-1) / 127.0)
