"""Every config file composes with Hydra's compose API; unknown choices fail by name."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate

CONF = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ["model", "dataset", "method", "quant", "eval", "logger"]


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_instantiates(group, option):
    override = f"{group}=[{option}]" if group == "quant" else f"{group}={option}"
    cfg = _compose([override])
    node = cfg.quant[option] if group == "quant" else cfg[group]
    if group == "method":
        assert cfg.method.name == option
        if cfg.method.loss is not None:
            assert instantiate(cfg.method.loss) is not None
    elif "_target_" in node:
        assert node.get("name", option) == option
        assert instantiate(node) is not None
    else:
        assert node  # eval configs are plain settings


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(experiment):
    cfg = _compose([f"+experiment={experiment}"])
    assert cfg.method.name


def test_default_quant_is_a_list_of_precisions():
    cfg = _compose([])
    assert list(cfg.quant) == ["none", "rtn_int4", "bnb_nf4"]
    cfg = _compose(["quant=[none,rtn_int8,bnb_fp4]"])
    assert list(cfg.quant) == ["none", "rtn_int8", "bnb_fp4"]
    assert cfg.quant.bnb_fp4.quant_type == "fp4"


def test_unknown_choice_names_the_option():
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as err:
        _compose(["method=gradient_magic"])
    assert "gradient_magic" in str(err.value)
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as err:
        _compose(["quant=[none,int5]"])
    assert "int5" in str(err.value)
