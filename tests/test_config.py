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


@pytest.mark.parametrize("recipe,epochs,batch", [("zhang2025_news", 10, 2), ("zhang2025_books", 5, 1)])
def test_the_reference_recipe_is_one_choice(recipe, epochs, batch):
    alphas = {"zhang2025_news": (1.0, 1.0, 1.0), "zhang2025_books": (100.0, 2.0, 100.0)}[recipe]
    assert tuple(_compose([f"recipe={recipe}", f"method={m}"]).method.loss.alpha
                 for m in ("ga_gdr", "npo_klr", "quail")) == alphas
    assert _compose(["method=ga_gdr"]).method.loss.alpha == 3.0  # the embedded default's own
    cfg = _compose([f"recipe={recipe}", "method=npo_klr"])
    m = cfg.method
    assert (m.lr, m.epochs, m.batch_size, m.max_length) == (1e-5, epochs, batch, 2048)
    assert (m.param_dtype, m.grad_clip, m.data_layout, m.retain_split) == ("native", 1.0, "muse_bos_chunks", "retain1")
    assert m.loss.kl_reduction == "batchmean" and cfg.model.dtype == "bfloat16" and cfg.eval.knowmem.n_icl == 10
    assert list(cfg.quant) == ["none", "bnb_int8", "bnb_fp4"]
    assert cfg.quant.bnb_fp4.compute_dtype == "float32" and cfg.quant.bnb_fp4.blocksize == 64
    assert instantiate(m.loss) is not None


def test_the_seed_varies_training_not_the_corpus():
    a, b = _compose(["seed=0"]), _compose(["seed=1"])
    assert a.dataset.generator == b.dataset.generator
    assert (a.model.train.seed, b.model.train.seed, a.method.seed, b.method.seed) == (0, 1, 0, 1)
