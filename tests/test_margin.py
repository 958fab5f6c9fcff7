"""QUAIL's auto margin: half the quantization step, computed by hand on a known weight."""
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from transformers import LlamaConfig, LlamaForCausalLM

from quail_repro.build import from_config
from quail_repro.errors import ConfigError
from quail_repro.stages import half_step

CONF = Path(__file__).resolve().parent.parent / "conf"


def auto_margin_quantizer(name: str, *overrides: str):
    """The auto-margin quantizer as quail's config composes it (conf/method_base/quail.yaml)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["method=quail", f"quant@method.auto_margin.quantizer={name}", *overrides])
    return from_config(cfg.method.auto_margin.quantizer)


def one_layer_model():
    cfg = LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                      num_attention_heads=1, num_key_value_heads=1)
    model = LlamaForCausalLM(cfg)
    # every quantized row: 8 weights spanning [-0.3, 1.2] -> asymmetric 4-bit step 1.5 / 15 = 0.1
    row = torch.tensor([-0.3, 0.0, 0.1, 0.2, 0.4, 0.6, 0.9, 1.2])
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and name != "lm_head":
                module.weight.copy_(row.expand_as(module.weight))
    return model


@pytest.mark.parametrize("aggregate", ["mean", "median", "max"])
def test_auto_margin_is_half_the_rtn_step(aggregate):
    quantizer = auto_margin_quantizer("rtn_int4", "method.auto_margin.quantizer.group_size=8")
    assert half_step(one_layer_model(), quantizer, aggregate) == pytest.approx(0.05)


def test_auto_margin_int8_step():
    quantizer = auto_margin_quantizer("rtn_int8", "method.auto_margin.quantizer.group_size=8")
    assert half_step(one_layer_model(), quantizer, "median") == pytest.approx(0.5 * 1.5 / 255)


def test_bad_aggregate_and_unknown_quantizer_are_config_errors():
    quantizer = auto_margin_quantizer("rtn_int4")
    with pytest.raises(ConfigError, match="aggregate"):
        half_step(one_layer_model(), quantizer, "mode")
    with pytest.raises((MissingConfigException, ConfigCompositionException), match="rtn_int5"):
        auto_margin_quantizer("rtn_int5")
