"""bf16-stored targets (model.train.param_dtype=bfloat16_emulated) at toy size: every saved
weight is a bf16 value, and bf16 unlearning from such a target has no "first rounding"."""
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from quail_repro import stages
from quail_repro.build import from_config
from quail_repro.cache import Cache
from quail_repro.train import UnlearnConfig, unlearn, unlearning_blocks
from quail_repro.validate import build_method, check_config

CONF = Path(__file__).resolve().parent.parent / "conf"


def toy_cfg(cache, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=toy", "device=cpu", f"paths.cache={cache}",
                                           "logger=none", *overrides])
    return check_config(cfg)[0]


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    cfg = toy_cfg(root, "model.train.param_dtype=bfloat16_emulated")
    r = stages.prepare(stages.Run.of(cfg, Cache(root)))
    return cfg, r.data, r.models


def test_every_saved_weight_is_bf16(emulated):
    cfg, _, models = emulated
    for ref in (models.target, models.retrain):
        saved = load_file(Path(ref.path) / "model.safetensors")
        assert saved and {t.dtype for t in saved.values()} == {torch.bfloat16}
        model, _ = stages.load(ref, cfg, models.dtype)  # model.dtype=float32: fp32 arithmetic on bf16 values
        for name, p in model.named_parameters():
            assert p.dtype == torch.float32 and torch.equal(p, p.bfloat16().float()), name


def test_native_storage_keeps_the_old_cache_keys():
    def train_key(param_dtype):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=[f"model.train.param_dtype={param_dtype}"])
        return from_config(cfg.model)._train_key()

    native, emulated = train_key("native"), train_key("bfloat16_emulated")
    assert "param_dtype" not in native  # the default: keys as before the setting existed
    assert emulated == {**native, "param_dtype": "bfloat16_emulated"}


def _one_step(cfg, data, models, start: dict, param_dtype: str) -> dict:
    """One unlearning step of cfg.method from weights ``start``, at lr 1e-5 (the reference's)."""
    model, tok = stages.load(models.target, cfg, torch.float32)
    model.load_state_dict(start)
    method, _, _ = build_method(cfg.method)
    m = cfg.method
    forget = unlearning_blocks(tok, data.corpus.raw[m.forget_split], m.max_length, m.data_layout)
    retain = unlearning_blocks(tok, data.corpus.raw[m.retain_split], m.max_length, m.data_layout)
    settings = replace(UnlearnConfig.from_method(m), lr=1e-5, max_steps=1, param_dtype=param_dtype)
    reference, _ = stages.load(models.target, cfg, torch.float32)  # unused by ga_gdr
    unlearn(model, reference, method, forget, retain, settings)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_bf16_unlearning_from_a_bf16_target_moves_only_what_the_optimizer_moved(emulated):
    cfg, data, models = emulated
    assert cfg.method.name == "ga_gdr"
    model, _ = stages.load(models.target, cfg, torch.float32)
    w0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    exact = _one_step(cfg, data, models, w0, "float32")  # w0 + u, the optimizer's own update
    rounded = _one_step(cfg, data, models, w0, "bfloat16_emulated")
    unchanged = total = 0
    for name, p in w0.items():
        stays = (exact[name].bfloat16().float() == p)  # |u| below half a bf16 ulp of w0
        assert torch.equal(rounded[name], exact[name].bfloat16().float()), name  # round(w0 + u), nothing else
        assert torch.equal(rounded[name][stays], p[stays]), name  # dw exactly 0 where u was too small
        unchanged, total = unchanged + int(stays.sum()), total + p.numel()
    assert 0.2 < unchanged / total < 1.0  # at lr 1e-5 the larger weights do not move, the small ones do

    # the old bf16 points: an fp32 target (here: not bf16-representable) is rounded by the first step
    # itself, so nearly every weight "changes" whatever the optimizer did
    noise = torch.Generator().manual_seed(0)
    w0_fp32 = {k: v + v.abs() * 2**-12 * torch.rand(v.shape, generator=noise) for k, v in w0.items()}
    first = _one_step(cfg, data, models, w0_fp32, "bfloat16_emulated")
    changed = sum(int((first[k] != w0_fp32[k]).sum()) for k in w0)
    assert changed / total > 0.99
