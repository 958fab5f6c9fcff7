"""GPTQ and AWQ through GPTQModel (the maintained successor of AutoGPTQ, which also runs
AWQ), an optional extra: ``pip install 'quail_repro[gptq]'``.

Unlike RTN and bitsandbytes, both calibrate on text: the stage hands the quantizer its
corpus (``use_corpus``) and the calibration split's first ``n_samples`` texts are used,
so a number never depends on a download. The quantized model is built in a temporary
folder and loaded back with GPTQModel, whose ``.model`` is the transformers model the
metrics run on.

Where gptqmodel is not installed, ``load`` raises QuantizerUnavailable naming the extra,
and the run records that precision as failed while the others run. This path is
exercised here only up to that error: the quantization itself is left to a machine with
the extra installed (GPTQModel is a source build, with CUDA kernels for a GPU).
"""
from __future__ import annotations

import importlib
import tempfile
from typing import Any

import torch
from torch import nn

from quail_repro.errors import ConfigError, QuantizerUnavailable

from .base import Quantizer, check_bool, check_int, check_name

METHODS = ("gptq", "awq")
EXTRA = "pip install 'quail_repro[gptq]'"


def import_gptqmodel():
    try:
        return importlib.import_module("gptqmodel")
    except ImportError as err:
        raise QuantizerUnavailable(
            f"GPTQ/AWQ need the gptqmodel package, which is not installed ({err}); install the extra: {EXTRA}"
        ) from None


class GPTQModelQuantizer(Quantizer):
    """``method`` gptq or awq, ``bits``, ``group_size``, ``sym``, ``desc_act`` (GPTQ's
    activation order), and ``calibration`` {split, n_samples, batch_size}."""

    def __init__(self, name: str, method: str, bits: int, group_size: int, sym: bool, desc_act: bool,
                 calibration: dict):
        owner = type(self).__name__
        self.name = check_name(owner, name)
        if method not in METHODS:
            raise ConfigError(f"{owner} option 'method' must be one of {list(METHODS)}, got {method!r}")
        self.method = method
        self.bits = check_int(owner, "bits", bits)
        if self.bits not in (2, 3, 4, 8):
            raise ConfigError(f"{owner} option 'bits' must be 2, 3, 4 or 8, got {bits}")
        self.group_size = check_int(owner, "group_size", group_size)
        if self.group_size != -1 and self.group_size < 1:
            raise ConfigError(f"{owner} option 'group_size' must be -1 (per channel) or >= 1, got {group_size}")
        self.sym, self.desc_act = check_bool(owner, "sym", sym), check_bool(owner, "desc_act", desc_act)
        self.calibration = dict(calibration)
        for key in ("n_samples", "batch_size"):
            if check_int(owner, f"calibration.{key}", self.calibration.get(key)) < 1:
                raise ConfigError(f"{owner} option 'calibration.{key}' must be >= 1")
        self._texts: list[str] | None = None

    def use_corpus(self, corpus) -> None:
        """The calibration texts: the first n_samples of the corpus's calibration split (a MUSE
        corpus's raw text, or the posts' text of a classification corpus)."""
        split = self.calibration.get("split")
        if hasattr(corpus, "raw"):
            if split not in corpus.raw:
                raise ConfigError(f"{self.name}: calibration.split={split!r}; the corpus has {sorted(corpus.raw)}")
            texts = corpus.raw[split]
        else:  # posts (data/tweets.py): its split() names the splits it has when this one is not one
            try:
                texts = [post["text"] for post in corpus.split(split)]
            except ConfigError as err:
                raise ConfigError(f"{self.name}: calibration.{err}") from None
        self._texts = list(texts[: self.calibration["n_samples"]])

    def load(self, path: str, *, dtype: torch.dtype, device: str) -> nn.Module:
        gptqmodel = import_gptqmodel()
        if self._texts is None:
            raise ConfigError(f"{self.name}: no calibration texts (the stage calls use_corpus before load)")
        from gptqmodel.quantization import METHOD

        qcfg = gptqmodel.QuantizeConfig(bits=self.bits, group_size=self.group_size, sym=self.sym,
                                        desc_act=self.desc_act, quant_method=getattr(METHOD, self.method.upper()))
        with tempfile.TemporaryDirectory(prefix=f"quail_{self.name}_") as out:
            model = gptqmodel.GPTQModel.load(path, qcfg, device=device, dtype=dtype)
            model.quantize(self._texts, batch_size=self.calibration["batch_size"])
            model.save(out)
            del model
            loaded = gptqmodel.GPTQModel.load(out, device=device)
        return loaded.model.eval()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "method": self.method, "bits": self.bits, "group_size": self.group_size,
                "sym": self.sym, "desc_act": self.desc_act, "calibration": dict(self.calibration),
                "library": "gptqmodel", "gptqmodel_version": _version()}


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("gptqmodel")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
