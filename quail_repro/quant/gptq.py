"""GPTQ and AWQ through GPTQModel (the maintained successor of AutoGPTQ, which also runs
AWQ), an optional extra in its own venv: ``bash scripts/setup_gptq.sh`` (.venv-gptq; GPTQModel
pins numpy==2.2.6, which would replace the main venv's).

Unlike RTN and bitsandbytes, both calibrate on text: the stage hands the quantizer its
corpus (``use_corpus``) and the calibration split's first ``n_samples`` texts are used,
so a number never depends on a download. The quantized model is built in a temporary
folder and loaded back with GPTQModel, whose ``.model`` is the transformers model the
metrics run on (on a CPU, GPTQModel's torch kernels, which hold scales in bf16).

GPTQ quantizes on a CPU (tests/test_gptq.py reads its codes back). AWQ does not: GPTQModel
7.6 packs AWQ weights with a CUDA kernel, so on a CPU ``load`` raises QuantizerUnavailable
and the run records that precision as failed. Where gptqmodel is not installed, ``load``
raises QuantizerUnavailable naming the extra, and the other precisions run.
"""
from __future__ import annotations

import importlib
import os
import tempfile
from typing import Any

import torch
from torch import nn

from quail_repro.errors import ConfigError, QuantizerUnavailable

from .base import Quantizer, check_bool, check_int, check_name

METHODS = ("gptq", "awq")
EXTRA = "bash scripts/setup_gptq.sh, then run with .venv-gptq/bin/python (GPTQModel pins numpy 2.2.6: a venv of its own)"


def import_gptqmodel():
    # GPTQModel sizes its CPU pool from the core count; on 2 cores its loader asks that pool for 2
    # workers of 1 and import fails (ValueError). Two workers: what a 2-core machine has.
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, (os.cpu_count() or 2) // 2)))
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
        if self.method == "awq" and not str(device).startswith("cuda"):
            raise QuantizerUnavailable(f"{self.name}: GPTQModel {_version()} packs AWQ weights with its CUDA kernel "
                                       f"(AwqGEMM) on this device ({device}); AWQ needs a GPU, GPTQ runs here")
        if self._texts is None:
            raise ConfigError(f"{self.name}: no calibration texts (the stage calls use_corpus before load)")
        from gptqmodel.quantization import METHOD

        qcfg = gptqmodel.QuantizeConfig(bits=self.bits, group_size=self.group_size, sym=self.sym,
                                        desc_act=self.desc_act, quant_method=getattr(METHOD, self.method.upper()))
        self._check_groups(path)
        with tempfile.TemporaryDirectory(prefix=f"quail_{self.name}_") as out:
            try:
                model = gptqmodel.GPTQModel.load(path, qcfg, device=device, dtype=dtype)
                model.quantize(self._texts, batch_size=self.calibration["batch_size"])
                model.save(out)
                del model
                loaded = gptqmodel.GPTQModel.load(out, device=device, dtype=dtype)
                with torch.no_grad():  # a kernel that cannot run here fails now, as this precision's failure
                    loaded.model(input_ids=torch.zeros((1, 2), dtype=torch.long, device=device))
            except (ValueError, NotImplementedError, RuntimeError, TypeError) as err:
                # e.g. "Unsupport model_type bert": the library's refusal, recorded as this precision's failure
                raise QuantizerUnavailable(f"{self.name}: GPTQModel {_version()} could not quantize this model: "
                                           f"{type(err).__name__}: {str(err)[:300]}") from err
        return loaded.model.eval()

    def _check_groups(self, path: str) -> None:
        """Every quantized Linear's inputs are a whole number of groups (the CPU kernel refuses others)."""
        if self.group_size == -1:
            return
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path)
        widths = {"hidden_size": getattr(config, "hidden_size", None),
                  "intermediate_size": getattr(config, "intermediate_size", None)}
        bad = {k: v for k, v in widths.items() if v and v % self.group_size}
        if bad:
            raise ConfigError(f"{self.name}: group_size {self.group_size} does not divide the model's "
                              + ", ".join(f"{k} {v}" for k, v in bad.items()) + " (set quant.<name>.group_size)")

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
