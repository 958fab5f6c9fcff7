"""Cache keys of the real-model path (no download: the stages are stopped at their cache
lookup): configs that differ in anything that changes a stage's bytes get different keys."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from quail_repro import stages
from quail_repro.cache import Cache

CONF = Path(__file__).resolve().parent.parent / "conf"
REAL = ["model=llama2_7b_muse_news", "dataset=muse_news", "eval=muse"]


class _Looked(Exception):
    pass


class KeyRecorder(Cache):
    """A cache that records the key a stage asks for, then stops the stage."""

    def get_or_build(self, stage, spec, build, numeric=True):
        self.last = self.key(stage, spec, numeric)
        raise _Looked


def compose_cfg(*overrides, device="cpu"):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*REAL, *overrides])
    with open_dict(cfg):  # interpolations kept (${seed}): the keys must resolve them
        cfg.device = device  # set directly: a CUDA key must be computable on a CPU machine
    return cfg


def keys(cfg, tmp_path) -> dict[str, str]:
    cache = KeyRecorder(tmp_path)
    r = stages.Run.of(cfg, cache, auc_retrain=0.5,
                   data=stages.Data(corpus=None, key=cfg.dataset.path, auc_retrain=cfg.dataset.privleak_auc_retrain))
    r.models = stages.prepare_models(r)
    out = {}
    for name, call in {
        "unlearn": lambda: stages.unlearn(r),
        "eval": lambda: stages.evaluate(r, r.models.target, "bnb_nf4"),
        "analysis": lambda: stages.analyse(r, r.models.retrain, "bnb_nf4"),
    }.items():
        with pytest.raises(_Looked):
            call()
        out[name] = cache.last
    return out


@pytest.mark.parametrize("method", ["ga_gdr", "quail"])
def test_identical_configs_agree(tmp_path, method):
    assert keys(compose_cfg(f"method={method}"), tmp_path) == keys(compose_cfg(f"method={method}"), tmp_path)


@pytest.mark.parametrize("a,b,differ", [
    (["seed=0"], ["seed=1"], ["unlearn", "eval"]),
    (["model.dtype=bfloat16"], ["model.dtype=float32"], ["unlearn", "eval", "analysis"]),
    (["method.param_dtype=float32"], ["method.param_dtype=native"], ["unlearn"]),
])
def test_seed_dtype_and_param_dtype_change_the_keys(tmp_path, a, b, differ):
    ka, kb = keys(compose_cfg("method=ga_gdr", *a), tmp_path), keys(compose_cfg("method=ga_gdr", *b), tmp_path)
    assert [s for s in ka if ka[s] != kb[s]] == differ


def test_the_auto_margin_quantizer_settings_are_in_the_unlearning_key(tmp_path):
    base = keys(compose_cfg("method=quail"), tmp_path)["unlearn"]
    group = keys(compose_cfg("method=quail", "method.auto_margin.quantizer.group_size=128"), tmp_path)["unlearn"]
    other = keys(compose_cfg("method=quail", "quant@method.auto_margin.quantizer=rtn_int8"), tmp_path)["unlearn"]
    assert len({base, group, other}) == 3
