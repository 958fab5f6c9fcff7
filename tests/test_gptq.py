"""GPTQ and AWQ (GPTQModel, the optional extra): the configs compose and build, and where the
extra is missing a run records those precisions as failed, naming the extra, while the others run."""
import importlib.util
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from quail_repro.build import from_config
from quail_repro.errors import ConfigError
from quail_repro.pipeline import run

CONF = Path(__file__).resolve().parent.parent / "conf"


def cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=["+experiment=toy", "device=cpu", "logger=none", *overrides])


@pytest.mark.parametrize("name, method", [("gptq_int4", "gptq"), ("awq_int4", "awq")])
def test_the_configs_build_a_quantizer_with_every_setting_described(name, method):
    q = from_config(cfg(f"quant=[{name}]").quant[name])
    d = q.describe()
    assert (d["name"], d["method"], d["bits"], d["library"]) == (name, method, 4, "gptqmodel")
    assert d["calibration"]["split"] == "retain2" and d["calibration"]["n_samples"] > 0


@pytest.mark.parametrize("override, option", [("quant.gptq_int4.method=squeeze", "method"),
                                              ("quant.gptq_int4.bits=5", "bits"),
                                              ("quant.gptq_int4.group_size=0", "group_size"),
                                              ("quant.gptq_int4.calibration.n_samples=0", "n_samples")])
def test_a_bad_setting_is_a_config_error_naming_it(override, option):
    with pytest.raises(ConfigError, match=option):
        from_config(cfg("quant=[gptq_int4]", override).quant.gptq_int4)


@pytest.mark.skipif(importlib.util.find_spec("gptqmodel") is not None, reason="the extra is installed here")
def test_without_the_extra_the_precision_fails_naming_it_and_the_others_run(tmp_path):
    res = run(cfg(f"paths.cache={tmp_path / 'cache'}", "method=target", "quant=[none,gptq_int4,awq_int4]"),
              tmp_path / "run").to_dict()
    assert res["status"] == "partial"
    assert res["metrics"]["none"]["knowmem_f"] is not None
    for q in ("gptq_int4", "awq_int4"):
        assert res["metrics"][q]["status"] == "failed"
        assert "pip install 'quail_repro[gptq]'" in res["metrics"][q]["error"]


def test_on_the_posts_gptq_calibrates_on_post_texts_or_names_the_splits_they_have():
    from quail_repro.data.tweets import TweetCorpus

    posts = TweetCorpus("toy", ["false", "true"], {"train": [{"text": f"post {i}", "label": i % 2} for i in range(4)],
                                                   "val": [], "test": []}, forget=[0], poisoned={})
    q = from_config(cfg("quant=[gptq_int4]", "quant.gptq_int4.calibration.split=retain").quant.gptq_int4)
    q.use_corpus(posts)
    assert q._texts == ["post 1", "post 2", "post 3"]
    default = from_config(cfg("quant=[gptq_int4]").quant.gptq_int4)  # retain2: a MUSE split the posts lack
    with pytest.raises(ConfigError, match="retain2.*choose one of forget, retain"):
        default.use_corpus(posts)


def test_gptq_on_the_classification_task_is_one_failed_precision_not_a_crashed_run(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        c = compose("config", overrides=["+experiment=toy_classification", "device=cpu", "logger=none",
                                         "method=target", f"paths.cache={tmp_path / 'cache'}",
                                         "quant=[none,gptq_int4]"])
    res = run(c, tmp_path / "run").to_dict()
    assert res["status"] == "partial" and res["metrics"]["none"]["acc_forget"] is not None
    assert res["metrics"]["gptq_int4"]["status"] == "failed" and "gptq_int4" in res["metrics"]["gptq_int4"]["error"]
