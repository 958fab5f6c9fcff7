"""bitsandbytes quantization at load time, as the reference code of Zhang et al. does it.

``AutoModelForCausalLM.from_pretrained(path, quantization_config=BitsAndBytesConfig(...),
device_map=device)``. Every BitsAndBytesConfig field that changes a number is set
explicitly from this class's options; nothing is left to its defaults. The reference
code's setting (``load_in_4bit=True`` and defaults) is ``bits=4, quant_type=fp4,
compute_dtype=float32, double_quant=false, blocksize=64``.

Findings that shape the options (bitsandbytes 0.50.2, transformers 5.24):

* blocksize: transformers' BitsAndBytesConfig has no blocksize field (an unknown keyword
  is dropped with an info-level log line) and ``bnb.nn.Linear4bit`` builds its
  ``Params4bit`` without one, so Params4bit's default, 64, is always used on this path.
  ``blocksize`` therefore accepts 64 only (ConfigError otherwise) and the loaded
  ``quant_state.blocksize`` of every layer is checked against it.
* On CPUs with AVX512-BF16, ``Linear4bit.forward`` in eval mode repacks its weight on the
  first call and from then on computes with a bf16 kernel (activations and absmax cast
  to bf16) whatever ``compute_dtype`` says. ``cpu_bf16_kernel=false`` (the default here)
  turns that off, so the CPU computes dequantize-then-matmul in ``compute_dtype``, as the
  GPU does; ``true`` keeps bitsandbytes' CPU behaviour (faster, different numbers).
* 8-bit (LLM.int8) casts weights to float16 before row-wise absmax int8 quantization and
  casts activations to float16 on every call (it logs a warning each time on CPU; that one
  message is filtered out here). ``int8_threshold`` is LLM.int8's outlier threshold:
  activation columns with an entry >= threshold are multiplied in fp16 instead of int8.

Each bit width has its own class (:class:`BitsAndBytes4bit`, :class:`BitsAndBytes8bit`)
taking only the options that apply to it, so no option can be set and silently ignored.
"""

from __future__ import annotations

import importlib.metadata
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from quail_repro.errors import ConfigError, QuantizerUnavailable

from .base import (Quantizer, _is_linear, as_dtype, auto_model_class, check_bool, check_int, check_name, dtype_name,
                   skipped_linears)
from .bnb_codes import QUANT_TYPES, import_bnb

# The only 4-bit blocksize the from_pretrained path can produce (Params4bit's default).
PATH_BLOCKSIZE_4BIT = 64
# Blocksize bitsandbytes uses to quantize the absmax values when double_quant is on.
DOUBLE_QUANT_BLOCKSIZE = 256
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# ---------------------------------------------------------------------------------------
# The quantizers
# ---------------------------------------------------------------------------------------


class BitsAndBytes(Quantizer, ABC):
    """What the 4-bit and 8-bit bitsandbytes quantizers share: loading with a preflight,
    verifying the loaded layers, describe(). Not built directly: use BitsAndBytes4bit or
    BitsAndBytes8bit, each of which takes only the options of its bit width.

    ``bits`` is optional and must equal the class's width; the configs state it because the
    report labels precisions by it.
    """

    bits: int  # set by each subclass

    def __init__(self, name: str, bits: int):
        self.name = check_name(self._owner, name)
        if check_int(self._owner, "bits", bits) != self.bits:
            other = "BitsAndBytes8bit" if self.bits == 4 else "BitsAndBytes4bit"
            raise ConfigError(
                f"{self._owner} option 'bits' must be {self.bits}, got {bits} ({other} is the other width)"
            )

    @property
    def _owner(self) -> str:
        return type(self).__name__

    # -- what each width supplies ------------------------------------------------------

    @abstractmethod
    def bnb_config(self):
        """The transformers BitsAndBytesConfig, every number-changing field explicit."""

    @abstractmethod
    def _options(self) -> dict[str, Any]:
        """describe()'s width-specific entries."""

    @abstractmethod
    def _layer_type(self, bnb) -> type:
        """The bnb layer class every quantized Linear must become."""

    @abstractmethod
    def _test_layer(self, bnb) -> nn.Module:
        """A 64x64 bnb layer with this configuration, for the preflight."""

    @abstractmethod
    def _check_layer(self, name: str, module: nn.Module, bnb) -> list[str]:
        """Problems with one loaded bnb layer (empty if it is as configured)."""

    def _after_verify(self, model: nn.Module, bnb) -> None:
        """Adjust the verified model before its first forward pass (default: nothing)."""

    # -- shared ------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "method": "bitsandbytes", "bits": self.bits}
        d.update(self._options())
        d.update(
            modules="all Linear except lm_head/tied/output embeddings",
            bitsandbytes_version=_version("bitsandbytes"),
            transformers_version=_version("transformers"),
        )
        return d

    def _preflight(self, bnb, device: str, dtype: torch.dtype) -> None:
        """Quantize and run one tiny layer on ``device``; QuantizerUnavailable if that fails."""
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise QuantizerUnavailable(f"{self.name}: device {device!r} requested but CUDA is not available")
        try:
            with torch.no_grad():
                layer = self._test_layer(bnb).to(dev).eval()
                out = layer(torch.randn(2, 64, dtype=dtype, device=dev))
                if not torch.isfinite(out).all():
                    raise RuntimeError("a test layer returned non-finite values")
        except QuantizerUnavailable:
            raise
        except Exception as exc:
            raise QuantizerUnavailable(
                f"{self.name}: bitsandbytes {_version('bitsandbytes')} cannot run {self.bits}-bit layers on "
                f"{device!r}: {type(exc).__name__}: {exc}"
            ) from exc

    def load(self, path: str, *, dtype: torch.dtype, device: str) -> nn.Module:
        dtype = as_dtype(dtype)
        bnb = import_bnb()
        self._preflight(bnb, device, dtype)
        model = auto_model_class(path).from_pretrained(
            path, dtype=dtype, device_map=device, quantization_config=self.bnb_config()
        )
        self.verify(model)
        self._after_verify(model, bnb)
        model.eval()
        return model

    def verify(self, model: nn.Module) -> list[str]:
        """Check that every Linear bitsandbytes should quantize is a bnb layer with the
        configured settings (so a silent no-op is impossible); returns their names.
        Call it before the first forward pass (a CPU forward may repack 4-bit weights)."""
        bnb = import_bnb()
        layer_type = self._layer_type(bnb)
        problems: list[str] = []
        quantized: list[str] = []
        skipped = set(skipped_linears(model))
        for name, module in model.named_modules():
            if isinstance(module, layer_type):
                quantized.append(name)
                problems += self._check_layer(name, module, bnb)
            elif isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)):
                problems.append(f"{name}: {type(module).__name__} in a {self.bits}-bit load")
            elif name and _is_linear(module) and name not in skipped:
                problems.append(f"{name}: left as {type(module).__name__}, not quantized")
        if not quantized:
            problems.append("no layer was quantized")
        if problems:
            raise QuantizerUnavailable(
                f"{self.name}: bitsandbytes did not quantize the model as configured: " + "; ".join(problems)
            )
        return quantized


class BitsAndBytes4bit(BitsAndBytes):
    """bitsandbytes 4-bit (NF4/FP4) quantization at load time.

    Config example (the reference code's load_in_4bit=True with defaults)::

        _target_: quail_repro.quant.BitsAndBytes4bit
        name: bnb_fp4
        bits: 4
        quant_type: fp4          # nf4 | fp4
        compute_dtype: float32   # float32 | bfloat16 | float16
        double_quant: false
        blocksize: 64            # the only value from_pretrained can use (see module doc)
        cpu_bf16_kernel: false
    """

    bits = 4

    def __init__(
        self,
        name: str,
        *,
        quant_type: str,
        compute_dtype: str,
        double_quant: bool,
        blocksize: int,
        cpu_bf16_kernel: bool = False,
        bits: int = 4,
    ):
        super().__init__(name, bits)
        owner = self._owner
        if quant_type not in QUANT_TYPES:
            raise ConfigError(f"{owner} option 'quant_type' must be one of {QUANT_TYPES}, got {quant_type!r}")
        if compute_dtype not in COMPUTE_DTYPES:
            raise ConfigError(f"{owner} option 'compute_dtype' must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}")
        blocksize = check_int(owner, "blocksize", blocksize)
        if blocksize != PATH_BLOCKSIZE_4BIT:
            raise ConfigError(
                f"{owner} option 'blocksize'={blocksize} cannot be used: transformers' "
                f"BitsAndBytesConfig has no blocksize field and bnb.nn.Linear4bit always "
                f"quantizes with Params4bit's default blocksize {PATH_BLOCKSIZE_4BIT} on the "
                f"from_pretrained path; only {PATH_BLOCKSIZE_4BIT} is accepted"
            )
        self.quant_type: str = quant_type
        self.compute_dtype: str = compute_dtype
        self.double_quant: bool = check_bool(owner, "double_quant", double_quant)
        self.blocksize: int = blocksize
        self.cpu_bf16_kernel: bool = check_bool(owner, "cpu_bf16_kernel", cpu_bf16_kernel)

    def bnb_config(self):
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.quant_type,
            bnb_4bit_compute_dtype=as_dtype(self.compute_dtype, "compute_dtype"),
            bnb_4bit_use_double_quant=self.double_quant,
            bnb_4bit_quant_storage=torch.uint8,
            llm_int8_skip_modules=None,  # transformers' default skips: lm_head, tied, last
        )

    def _options(self) -> dict[str, Any]:
        return dict(
            quant_type=self.quant_type,
            compute_dtype=self.compute_dtype,
            double_quant=self.double_quant,
            double_quant_blocksize=DOUBLE_QUANT_BLOCKSIZE if self.double_quant else None,
            blocksize=self.blocksize,
            quant_storage="uint8",
            cpu_bf16_kernel=self.cpu_bf16_kernel,
        )

    def _layer_type(self, bnb) -> type:
        return bnb.nn.Linear4bit

    def _pin_cpu_kernel(self, layer) -> None:
        """Keep bitsandbytes' CPU bf16 kernel off unless cpu_bf16_kernel (see module doc)."""
        layer.support_avx512bf16_for_cpu = self.cpu_bf16_kernel and layer.support_avx512bf16_for_cpu

    def _test_layer(self, bnb) -> nn.Module:
        layer = bnb.nn.Linear4bit(
            64,
            64,  # the CPU bf16 kernel needs out_features % 32 == 0
            bias=False,
            compute_dtype=as_dtype(self.compute_dtype),
            compress_statistics=self.double_quant,
            quant_type=self.quant_type,
        )
        self._pin_cpu_kernel(layer)
        return layer

    def _after_verify(self, model: nn.Module, bnb) -> None:
        for module in model.modules():
            if isinstance(module, bnb.nn.Linear4bit):
                self._pin_cpu_kernel(module)

    def _check_layer(self, name: str, module: nn.Module, bnb) -> list[str]:
        weight = module.weight
        state = getattr(weight, "quant_state", None)
        if not isinstance(weight, bnb.nn.Params4bit) or state is None:
            return [f"{name}: weight is not a quantized Params4bit"]
        seen = {
            "quant_type": state.quant_type,
            "blocksize": state.blocksize,
            "double_quant": bool(state.nested),
            "compute_dtype": dtype_name(module.compute_dtype) if module.compute_dtype is not None else None,
            "storage": dtype_name(weight.dtype),
        }
        want = {
            "quant_type": self.quant_type,
            "blocksize": self.blocksize,
            "double_quant": self.double_quant,
            "compute_dtype": self.compute_dtype,
            "storage": "uint8",
        }
        problems = [f"{name}: {key} is {seen[key]!r}, configured {want[key]!r}"
                    for key in want if seen[key] != want[key]]
        if tuple(state.shape) != (module.out_features, module.in_features):
            problems.append(f"{name}: quant_state shape {tuple(state.shape)} is not the layer's")
        return problems


class BitsAndBytes8bit(BitsAndBytes):
    """bitsandbytes 8-bit (LLM.int8) quantization at load time.

    Config example::

        _target_: quail_repro.quant.BitsAndBytes8bit
        name: bnb_int8
        bits: 8
        int8_threshold: 6.0      # LLM.int8 outlier threshold; 0 = no fp16 outlier path
    """

    bits = 8

    def __init__(self, name: str, *, int8_threshold: float, bits: int):
        super().__init__(name, bits)
        if isinstance(int8_threshold, bool) or not isinstance(int8_threshold, (int, float)) or int8_threshold < 0:
            raise ConfigError(f"{self._owner} option 'int8_threshold' must be a number >= 0, got {int8_threshold!r}")
        self.int8_threshold: float = float(int8_threshold)

    def bnb_config(self):
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(
            load_in_8bit=True,
            llm_int8_threshold=self.int8_threshold,
            llm_int8_has_fp16_weight=False,
            llm_int8_skip_modules=None,
            llm_int8_enable_fp32_cpu_offload=False,
        )

    def _options(self) -> dict[str, Any]:
        return dict(
            int8_threshold=self.int8_threshold,
            has_fp16_weights=False,
            weights="float16 then int8 row-wise absmax",
            activations="float16 then int8 row-wise absmax (outlier columns fp16 if threshold > 0)",
        )

    def _layer_type(self, bnb) -> type:
        return bnb.nn.Linear8bitLt

    def _test_layer(self, bnb) -> nn.Module:
        return bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False, threshold=self.int8_threshold)

    def _check_layer(self, name: str, module: nn.Module, bnb) -> list[str]:
        problems = []
        weight = module.weight
        if not isinstance(weight, bnb.nn.Int8Params) or weight.dtype != torch.int8:
            problems.append(f"{name}: weight is {type(weight).__name__} {weight.dtype}, not int8 Int8Params")
        elif getattr(weight, "SCB", None) is None:
            problems.append(f"{name}: int8 weight has no row scales (SCB)")
        if module.state.threshold != self.int8_threshold:
            problems.append(f"{name}: threshold {module.state.threshold}, configured {self.int8_threshold}")
        if module.state.has_fp16_weights:
            problems.append(f"{name}: has_fp16_weights is on")
        return problems
