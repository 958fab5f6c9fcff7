"""GPTQ and AWQ (GPTQModel, the optional extra): the configs compose and build, and where the
extra is missing a run records those precisions as failed, naming the extra, while the others run.
With the extra (its own venv: scripts/test_gptq.sh), GPTQ quantizes on the CPU: the checkpoint's
codes, scales and zero points read back lie on the 4-bit grid, the loaded model computes with them,
and GPTQ's error on the calibration activations is below RTN's at the same bits and groups."""
import importlib.util
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from quail_repro.build import from_config
from quail_repro.errors import ConfigError
from quail_repro.pipeline import run

CONF = Path(__file__).resolve().parent.parent / "conf"
HAVE_GPTQMODEL = importlib.util.find_spec("gptqmodel") is not None
needs_gptqmodel = pytest.mark.skipif(not HAVE_GPTQMODEL, reason="the gptq extra is not installed (scripts/setup_gptq.sh)")


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
        assert "scripts/setup_gptq.sh" in res["metrics"][q]["error"]


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


# -- with GPTQModel --------------------------------------------------------------------------------

CALIBRATION = [f"the town of Avel{i} lies by the river {i}, and its mayor is Cora Nousliam {i % 7}" for i in range(32)]


def _unpack_gptq(state: dict, prefix: str, bits: int = 4):
    """(codes [in, out], zero points [groups, out], scales [groups, out], group of each input) from a
    GPTQ-format checkpoint: int32 words pack 32/bits codes along the input (qweight) or the output
    (qzeros), lowest bits first; the stored zero point is the zero minus one (GPTQ's v1 format)."""
    per_word = 32 // bits
    shifts = torch.arange(per_word, dtype=torch.int32) * bits
    mask = (1 << bits) - 1
    qweight, qzeros = state[f"{prefix}.qweight"], state[f"{prefix}.qzeros"]
    codes = ((qweight[:, None, :] >> shifts[None, :, None]) & mask).reshape(-1, qweight.shape[1])
    zeros = ((qzeros[:, :, None] >> shifts[None, None, :]) & mask).reshape(qzeros.shape[0], -1) + 1
    return codes, zeros, state[f"{prefix}.scales"].float(), state[f"{prefix}.g_idx"].long()


@needs_gptqmodel
def test_gptq_on_the_cpu_stores_a_4bit_grid_that_beats_rtn_on_the_calibration_activations(tiny_llama, tmp_path):
    from gptqmodel import GPTQModel, QuantizeConfig
    from safetensors.torch import load_file

    from quail_repro.quant.gptq import import_gptqmodel
    from quail_repro.quant.rtn import rtn_quantize

    import_gptqmodel()  # sets the CPU pool size GPTQModel needs on 2 cores
    path, model = tiny_llama
    qcfg = QuantizeConfig(bits=4, group_size=64, sym=True, desc_act=False)
    q = GPTQModel.load(str(path), qcfg, device="cpu", dtype=torch.float32)
    q.quantize(CALIBRATION, batch_size=1)
    q.save(str(tmp_path / "gptq"))
    state = load_file(str(tmp_path / "gptq" / "model.safetensors"))
    layer = "model.layers.0.self_attn.q_proj"
    codes, zeros, scales, group = _unpack_gptq(state, layer)
    assert codes.min() >= 0 and codes.max() <= 15 and bool((zeros == 8).all())  # symmetric: zero point 8
    assert group.tolist() == [i // 64 for i in range(256)]
    w_gptq = (scales[group] * (codes - zeros[group]).float()).T  # [out, in]
    w = model.state_dict()[f"{layer}.weight"]
    steps = scales[group].T
    # GPTQ moves each weight to a grid point near its error-compensated value: mostly the nearest
    assert float(((w - w_gptq).abs() <= steps / 2 + 1e-6).float().mean()) > 0.5
    assert float(((w - w_gptq).abs() / steps).max()) < 8

    # the inputs of layer 0's q_proj on the calibration texts (GPTQ quantizes layer 0 from these)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    seen = []
    hook = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: seen.append(i[0].reshape(-1, 256)))
    with torch.no_grad():
        for text in CALIBRATION:
            model(**tok(text, return_tensors="pt"))
    hook.remove()
    x = torch.cat(seen)
    w_rtn = rtn_quantize(w, 4, 64, True)
    err_gptq, err_rtn = ((x @ (w - w_gptq).T) ** 2).sum(), ((x @ (w - w_rtn).T) ** 2).sum()
    assert err_gptq < 0.9 * err_rtn, (float(err_gptq), float(err_rtn))

    # the model GPTQModel loads for evaluation computes with that grid
    loaded = GPTQModel.load(str(tmp_path / "gptq"), device="cpu", dtype=torch.float32).model.eval()
    module = dict(loaded.named_modules())[layer]
    with torch.no_grad():
        assert torch.allclose(module(x[:8]).float(), x[:8] @ w_gptq.T, atol=0.05 * float(x[:8].abs().max()))


@needs_gptqmodel
def test_a_toy_run_quantizes_with_gptq_and_records_awq_on_the_cpu_as_needing_a_gpu(tmp_path):
    res = run(cfg(f"paths.cache={tmp_path / 'cache'}", "method=target", "quant=[none,gptq_int4,awq_int4]",
                  "quant.gptq_int4.group_size=32", "quant.gptq_int4.calibration.n_samples=8"),
              tmp_path / "run").to_dict()
    assert "error" not in res["metrics"]["gptq_int4"] and res["metrics"]["gptq_int4"]["knowmem_f"] is not None
    assert res["metrics"]["awq_int4"]["status"] == "failed" and "needs a GPU" in res["metrics"]["awq_int4"]["error"]


@needs_gptqmodel
def test_on_the_classifier_gptqmodels_refusal_is_one_failed_precision(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        c = compose("config", overrides=["+experiment=toy_classification", "device=cpu", "logger=none",
                                         "method=target", f"paths.cache={tmp_path / 'cache'}",
                                         "quant=[none,gptq_int4]", "quant.gptq_int4.calibration.split=retain",
                                         "quant.gptq_int4.group_size=32"])
    res = run(c, tmp_path / "run").to_dict()
    assert res["status"] == "partial" and res["metrics"]["none"]["acc_forget"] is not None
    assert res["metrics"]["gptq_int4"]["status"] == "failed"
    assert "could not quantize this model" in res["metrics"]["gptq_int4"]["error"]
