"""LoRA unlearning: the base method's loss trains a low-rank adapter (peft), merged before saving.

Only the adapter's matrices A and B are trained (peft freezes every base weight); the unlearned
model is saved with the adapter merged into its target modules (W + alpha/r * B A, peft's
``merge_and_unload``), so quantization and evaluation see a plain model of the original
architecture, and every weight outside the target modules is the original's, bit for bit.
A published result says LoRA unlearning survives 4-bit better (science.md section 5).
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from quail_repro.errors import ConfigError


class LoRA:
    def __init__(self, r: int, alpha: float, dropout: float, target_modules: Any):
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise ConfigError(f"method.lora.r={r!r}: a positive integer (the adapter's rank)")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
            raise ConfigError(f"method.lora.alpha={alpha!r}: a positive number (the update is scaled by alpha / r)")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ConfigError(f"method.lora.dropout={dropout!r}: a number in [0, 1)")
        if isinstance(target_modules, (ListConfig, DictConfig)):
            target_modules = OmegaConf.to_container(target_modules)
        if not (target_modules == "all-linear" or (isinstance(target_modules, list) and target_modules
                                                   and all(isinstance(t, str) and t for t in target_modules))):
            raise ConfigError(f"method.lora.target_modules={target_modules!r}: a list of module names "
                              "(q_proj, v_proj, ...) or all-linear (every Linear but the output head)")
        self.r, self.alpha, self.dropout, self.target_modules = r, float(alpha), float(dropout), target_modules

    def attach(self, model):
        """The model wrapped with a fresh adapter (B = 0: it starts as the model itself)."""
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                            target_modules=self.target_modules, bias="none")
        try:
            return get_peft_model(model, config)
        except ValueError as err:  # e.g. a target module the model does not have
            raise ConfigError(f"method.lora.target_modules={self.target_modules!r}: {err}") from err

    @staticmethod
    def merge(peft_model):
        """The base model with the adapter merged into its weights, adapter layers removed."""
        return peft_model.merge_and_unload()
