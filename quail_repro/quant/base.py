"""The quantizer interface and what every quantizer shares.

A quantizer is "a way to load a saved model at a precision": ``load(path, dtype=,
device=)`` returns a model ready for evaluation, ``describe()`` returns every setting that
changes a number (for results.json and logging). Quantizers are built from Hydra configs
(``_target_`` + ``hydra.utils.instantiate``), so each constructor takes the config fields
as keyword arguments and validates them at once, raising ConfigError that names the
option.

Which modules are quantized: every ``nn.Linear`` (and GPT-2 style ``Conv1D``) except the
ones transformers' bitsandbytes integration keeps in full precision (the output
embedding ``lm_head``, weights tied to the input embedding, and the module holding the
model's last parameter). ``quantizable_linears`` computes that set once for all
quantizers, so RTN and bitsandbytes quantize exactly the same layers; embeddings and
norms are never touched.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn

from quail_repro.errors import ConfigError

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def as_dtype(value: torch.dtype | str, option: str = "dtype") -> torch.dtype:
    """A torch dtype from a dtype or one of the names float32/bfloat16/float16."""
    if isinstance(value, torch.dtype):
        if value not in (torch.float32, torch.bfloat16, torch.float16):
            raise ConfigError(f"{option}: unsupported dtype {value}; use float32, bfloat16 or float16")
        return value
    if isinstance(value, str):
        name = value.removeprefix("torch.")
        if name in _DTYPES:
            return _DTYPES[name]
    raise ConfigError(f"{option}: unknown dtype {value!r}; use one of float32, bfloat16, float16")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_name(owner: str, name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{owner} option 'name' must be a non-empty string, got {name!r}")
    return name


def check_bool(owner: str, option: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{owner} option '{option}' must be true or false, got {value!r}")
    return value


def check_int(owner: str, option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{owner} option '{option}' must be an integer, got {value!r}")
    return value


class Quantizer:
    """Base class: a way to load a saved model at a precision.

    Subclasses set ``name`` and implement ``load`` and ``describe``.
    """

    name: str

    def load(self, path: str, *, dtype: torch.dtype, device: str) -> nn.Module:
        """Load the model saved at ``path`` (save_pretrained layout) for evaluation.

        ``dtype`` is the precision of every tensor the quantizer does not quantize
        (embeddings, norms, lm_head; everything for FullPrecision); ``device`` is a torch
        device string ("cpu", "cuda", "cuda:0"). The model is returned in eval mode.
        """
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Every setting that changes a number, as JSON-serialisable values."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"{type(self).__name__}({args})"


def auto_model_class(path: str):
    """AutoModelForSequenceClassification for a saved classifier (the classification task),
    AutoModelForCausalLM for everything else: every quantizer loads either the same way."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    architectures = getattr(AutoConfig.from_pretrained(path), "architectures", None) or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return AutoModelForSequenceClassification
    return AutoModelForCausalLM


def load_full_precision(path: str, *, dtype: torch.dtype | str, device: str) -> nn.Module:
    """AutoModelForCausalLM (or, for a classifier, AutoModelForSequenceClassification)
    .from_pretrained(path, dtype=dtype) on ``device``, eval mode."""
    model = auto_model_class(path).from_pretrained(path, dtype=as_dtype(dtype))
    model.to(device)
    model.eval()
    return model


def _skip_patterns(model: nn.Module) -> list[str]:
    """Module names transformers' bitsandbytes path keeps in full precision."""
    try:  # the helper transformers itself uses for BitsAndBytesConfig without skip list
        from transformers.quantizers.base import get_keys_to_not_convert

        return list(get_keys_to_not_convert(model))
    except Exception:  # pragma: no cover - only if transformers moves the helper
        skip = set()
        out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        in_emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        for name, module in model.named_modules():
            if out_emb is not None and module is out_emb:
                skip.add(name)
            w = getattr(module, "weight", None)
            if in_emb is not None and w is not None and w is in_emb.weight:
                skip.add(name)
        params = list(model.named_parameters())
        if params:
            skip.add(params[-1][0].rsplit(".", 1)[0])
        return sorted(skip)


def _is_skipped(name: str, patterns: list[str]) -> bool:
    try:
        from transformers.quantizers.quantizers_utils import should_convert_module

        return not should_convert_module(name, patterns)
    except Exception:  # pragma: no cover
        return any(name == p or name.startswith(p + ".") or name.endswith(p) for p in patterns)


def _is_linear(module: nn.Module) -> bool:
    if type(module) is nn.Linear:
        return True
    try:
        from transformers.pytorch_utils import Conv1D
    except Exception:  # pragma: no cover
        return False
    return isinstance(module, Conv1D)


def quantizable_linears(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) for every plain Linear/Conv1D a quantizer should quantize.

    Must be called on the full-precision model (before any module is replaced).
    """
    patterns = _skip_patterns(model)
    for name, module in model.named_modules():
        if name and _is_linear(module) and not _is_skipped(name, patterns):
            yield name, module


def skipped_linears(model: nn.Module) -> list[str]:
    """Names of plain Linear/Conv1D modules that stay in full precision (e.g. lm_head)."""
    patterns = _skip_patterns(model)
    return [n for n, m in model.named_modules() if n and _is_linear(m) and _is_skipped(n, patterns)]


class WeightQuantizer(Quantizer):
    """A quantizer that fake-quantizes the Linear weights of a full-precision model in place
    (RTN, the llama.cpp formats): subclasses implement ``quantize_model``."""

    def quantize_model(self, model: nn.Module) -> list[str]:
        """Replace each quantized Linear's weight by its dequantized value; the names done."""
        raise NotImplementedError

    def load(self, path: str, *, dtype: torch.dtype, device: str) -> nn.Module:
        model = load_full_precision(path, dtype=dtype, device=device)
        self.quantize_model(model)
        return model


class FullPrecision(Quantizer):
    """No quantization: ``AutoModelForCausalLM.from_pretrained(path, dtype=dtype)``.

    Config: ``{_target_: quail_repro.quant.base.FullPrecision, name: none}``.
    """

    def __init__(self, name: str):
        self.name = check_name("FullPrecision", name)

    def load(self, path: str, *, dtype: torch.dtype, device: str) -> nn.Module:
        return load_full_precision(path, dtype=dtype, device=device)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "method": "none"}
