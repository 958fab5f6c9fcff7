"""SURE (methods/sure.py) and LoRA unlearning (methods/lora.py): the mask is applied, the adapter is
merged, and only what each method may change changes."""
import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from quail_repro import CONF_DIR, stages
from quail_repro.build import from_config
from quail_repro.cache import Cache
from quail_repro.errors import ConfigError
from quail_repro.methods.ga import GA
from quail_repro.methods.regularizers import GDR
from quail_repro.methods.sure import Sure
from quail_repro.train import UnlearnConfig, unlearn
from quail_repro.validate import check_config


def _cfg(cache, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=toy", "device=cpu", f"paths.cache={cache}", *overrides])
    return check_config(cfg)[0]


def _settings(**kw):
    base = dict(lr=1e-3, epochs=1, batch_size=2, max_steps=3, seed=0, weight_decay=0.01, grad_clip=1.0,
                max_abs_loss=None, param_dtype="float32", early_stop=None)
    return UnlearnConfig(**{**base, **kw})


def test_sure_trains_only_the_salient_modules():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    blocks = torch.randint(0, 64, (6, 16), generator=torch.Generator().manual_seed(1))
    method = Sure(GDR(GA(), alpha=1.0), percentile=50)
    saliency = method.saliency(model, None, blocks, 2, stages.CAUSAL_LM)
    unlearn(model, None, method, blocks, blocks, _settings())  # weight decay on: a frozen weight must not decay
    chosen = set(method.selected)
    assert 0 < len(chosen) < len(saliency) and len(chosen) >= len(saliency) // 2 - 1
    assert min(saliency[m] for m in chosen) >= max(saliency[m] for m in saliency if m not in chosen)
    for name, w in model.state_dict().items():
        module = name.rsplit(".", 1)[0]
        assert torch.equal(w, before[name]) != (module in chosen), name  # frozen: equal; trained: moved


def test_sure_rejects_a_bad_percentile():
    with pytest.raises(ConfigError, match="percentile"):
        Sure(GDR(GA(), alpha=1.0), percentile=100)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("cache")
    cfg = _cfg(cache_dir)
    r = stages.prepare(stages.Run.of(cfg, Cache(str(cache_dir))))
    return cache_dir, r.cache, r.data, r.models


def _states(models, subject):
    load = lambda p: AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).state_dict()  # noqa: E731
    return load(models.target.path), load(subject.path)


def test_lora_is_merged_and_leaves_the_other_weights_alone(toy):
    cache_dir, cache, data, models = toy
    cfg = _cfg(cache_dir, "method=lora_ga_gdr", "method.lora.target_modules=[q_proj,v_proj]")
    target, unlearned = _states(models, stages.unlearn(stages.Run.of(cfg, cache, data=data, models=models)).subject)
    assert set(unlearned) == set(target)  # a plain model: no adapter tensors left
    for name, w in target.items():
        adapted = any(f"{m}.weight" in name for m in ("q_proj", "v_proj"))
        assert torch.equal(unlearned[name], w) != adapted, name
    # LoRA's update of an adapted weight has rank <= r
    dw = unlearned["model.layers.0.self_attn.q_proj.weight"] - target["model.layers.0.self_attn.q_proj.weight"]
    assert torch.linalg.matrix_rank(dw.double(), atol=1e-6) <= cfg.method.lora.r


def test_sure_through_the_stages_freezes_modules(toy):
    cache_dir, cache, data, models = toy
    target, unlearned = _states(models, stages.unlearn(stages.Run.of(_cfg(cache_dir, "method=sure"), cache, data=data, models=models)).subject)
    changed = {n for n in target if not torch.equal(unlearned[n], target[n])}
    assert 0 < len(changed) < len(target)


def test_bad_comparator_settings_fail_before_training(tmp_path):
    with pytest.raises(ConfigError, match="percentile"):
        _cfg(tmp_path, "method=sure", "method.saliency.percentile=-1")
    with pytest.raises(ConfigError, match="target_modules"):
        _cfg(tmp_path, "method=lora_ga_gdr", "method.lora.target_modules=[]")
    with pytest.raises(ConfigError, match="method.lora.r"):
        _cfg(tmp_path, "method=lora_ga_gdr", "method.lora.r=0")
    assert isinstance(from_config(_cfg(tmp_path, "method=lora_ga_gdr").method.lora).r, int)


def test_lora_all_linear_adapts_what_the_quantizers_quantize(toy):
    cache_dir, cache, data, models = toy
    target, unlearned = _states(models, stages.unlearn(stages.Run.of(_cfg(cache_dir, "method=lora_ga_gdr"), cache, data=data,
                                                         models=models))
                                .subject)
    changed = {n for n in target if not torch.equal(unlearned[n], target[n])}
    linear = {n for n in target if n.endswith("proj.weight")}
    assert changed == linear  # not lm_head, embeddings or norms


@pytest.mark.slow
def test_the_comparators_table_runs_at_toy_size(tmp_path):
    """+experiment=[table2_comparators,toy] with fewer rows and precisions (about 30 s): every row
    finishes, and a gguf precision has its recovery ratio and bucket analysis like the others."""
    import json
    import os
    import subprocess
    import sys

    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "quail_repro", "+experiment=[table2_comparators,toy]", "device=cpu",
                           "logger=none", "quant=[none,rtn_int4,gguf_q4_0]", "method=target,sure,lora_ga_gdr",
                           f"hydra.sweep.dir={sweep}"], cwd=CONF_DIR.parent, capture_output=True, text=True,
                          env=dict(os.environ, QUAIL_CACHE_DIR=str(tmp_path / "cache")), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "## table2_comparators" in proc.stdout and (sweep / "table2_comparators.csv").is_file()
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    assert [r["method"] for r in results] == ["target", "sure", "lora_ga_gdr"]
    for r in results[1:]:
        assert r["status"] == "ok" and set(r["recovery"]) == {"rtn_int4", "gguf_q4_0"}
        assert 0 < r["analysis"]["gguf_q4_0"]["bucket_overlap"] <= 1
