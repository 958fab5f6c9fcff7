"""The QUAIL variants that can bind (issue 21): the fake-quantized forward (straight-through), the
quantizer-shift margin, the hinge measured after quantization, the fake-quant forget comparator, and
a reference that sees the model's own dropout masks."""
import copy

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import LlamaConfig, LlamaForCausalLM

from quail_repro import CONF_DIR, losses
from quail_repro.errors import ConfigError
from quail_repro.fakequant import FakeQuant
from quail_repro.methods.base import paired_outputs
from quail_repro.methods.ga import GA
from quail_repro.methods.quail import Quail
from quail_repro.methods.quantized import QuantizedForget
from quail_repro.methods.regularizers import GDR
from quail_repro.quant import RTN
from quail_repro.stages import quantizer_shift
from quail_repro.train import CAUSAL_LM, UnlearnConfig, unlearn
from quail_repro.validate import check_config

RTN4 = RTN("rtn_int4", bits=4, group_size=16, symmetric=False)


def _model(dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16,
                                        attention_dropout=dropout, attn_implementation="eager"))


BLOCKS = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(1))


def _batch(blocks=BLOCKS):
    return CAUSAL_LM.batch(blocks, torch.device("cpu"))


def test_the_fake_quantized_forward_is_the_quantized_model_and_its_gradient_passes_straight_through():
    model = _model()
    quantized = copy.deepcopy(model)
    RTN4.quantize_model(quantized)
    fake = FakeQuant(RTN4, model)
    out = CAUSAL_LM.outputs(fake.view(model), _batch())
    ref = CAUSAL_LM.outputs(quantized, _batch())
    assert torch.equal(out.logits, ref.logits)
    losses.mean_nll(out.logits, out.targets).backward()
    losses.mean_nll(ref.logits, ref.targets).backward()
    params, qparams = dict(model.named_parameters()), dict(quantized.named_parameters())
    for name in fake.names:  # d loss / d master weight = d loss / d quantized weight
        assert torch.allclose(params[name].grad, qparams[name].grad, atol=1e-7), name


def test_the_quantizer_shift_is_zero_on_grid_weights_and_the_quantized_models_distance_otherwise():
    model = _model()
    expected_model = copy.deepcopy(model)
    RTN4.quantize_model(expected_model)
    with torch.no_grad():
        a, b = CAUSAL_LM.outputs(expected_model, _batch()), CAUSAL_LM.outputs(model, _batch())
    per_token = losses.logit_distance(a.logits, b.logits, "l2")
    assert quantizer_shift(model, RTN4, BLOCKS, "l2", 3, CAUSAL_LM) == pytest.approx(per_token.mean().item(), rel=1e-5)
    # already on the grid: RTN gives it back up to the float rounding of its recomputed scale
    assert quantizer_shift(expected_model, RTN4, BLOCKS, "l2", 3, CAUSAL_LM) < 1e-3 * per_token.mean().item()


def test_the_post_quantization_hinge_is_flat_until_a_weight_changes_bucket_then_it_acts():
    model, reference = _model(), _model()
    method = Quail(GDR(GA(), alpha=1.0), gamma=1.0, margin=0.5, distance="l2", space="quantized", quantizer=RTN4)
    method.prepare(model, reference)
    cur, base_ref, qcur, qref = method.forget_outputs(model, reference, _batch(), CAUSAL_LM)
    assert base_ref is None and torch.equal(qcur.logits, qref.logits)  # same buckets: distance exactly 0
    _, parts = method.loss((cur, base_ref, qcur, qref), (cur, None))
    assert parts["hinge"] == pytest.approx(0.5) and parts["hinge_active"] == 0.0
    # a small move of one weight inside its bucket (not its group's min or max, which set the grid)
    # changes the full-precision logits, not the quantized ones
    name = method.fake.names[0]
    weight = dict(model.named_parameters())[name]
    group = weight[0, :16]
    inner = next(i for i in range(16) if group.min() < group[i] < group.max())
    with torch.no_grad():
        weight[0, inner] += 1e-6
    assert not torch.equal(method.forget_outputs(model, reference, _batch(), CAUSAL_LM)[0].logits, cur.logits)
    cur, _, qcur, qref = method.forget_outputs(model, reference, _batch(), CAUSAL_LM)
    assert torch.equal(qcur.logits, qref.logits)
    # moving a whole row by more than a step crosses boundaries: the hinge now has a gradient
    with torch.no_grad():
        dict(model.named_parameters())[name][0].add_(0.5)
    cur, base_ref, qcur, qref = method.forget_outputs(model, reference, _batch(), CAUSAL_LM)
    total, parts = method.loss((cur, base_ref, qcur, qref), (cur, None))
    assert 0 < parts["hinge_active"] and parts["hinge"] < 0.5
    model.zero_grad()
    total.backward()
    assert dict(model.named_parameters())[name].grad.abs().sum() > 0


def test_a_reference_in_a_model_with_dropout_replays_the_models_masks_without_touching_its_stream():
    model = _model(dropout=0.5).train()
    reference = copy.deepcopy(model).eval()
    torch.manual_seed(3)
    cur, ref = paired_outputs(model, reference, _batch(), CAUSAL_LM, True)
    after_with = torch.get_rng_state()
    assert torch.equal(cur.logits, ref.logits) and not reference.training  # same weights, same masks
    torch.manual_seed(3)
    alone, _ = paired_outputs(model, reference, _batch(), CAUSAL_LM, False)
    assert torch.equal(alone.logits, cur.logits) and torch.equal(torch.get_rng_state(), after_with)
    with torch.no_grad():
        eval_mode = CAUSAL_LM.outputs(reference.eval(), _batch())
    assert not torch.equal(eval_mode.logits, cur.logits)  # what an eval-mode reference would have compared


def test_the_fake_quant_forget_comparator_takes_its_forget_term_through_the_grid():
    model = _model()
    method = QuantizedForget(GDR(GA(), alpha=1.0), RTN4)
    method.prepare(model, None)
    cur, _ = method.forget_outputs(model, None, _batch(), CAUSAL_LM)
    quantized = copy.deepcopy(model)
    RTN4.quantize_model(quantized)
    assert torch.equal(cur.logits, CAUSAL_LM.outputs(quantized, _batch()).logits)
    retain, _ = method.retain_outputs(model, None, _batch(), CAUSAL_LM)
    assert torch.equal(retain.logits, CAUSAL_LM.outputs(model, _batch()).logits)  # retain: full precision
    before = copy.deepcopy(model.state_dict())
    settings = UnlearnConfig(lr=1e-3, epochs=1, batch_size=2, max_steps=2, seed=0, weight_decay=0.0, grad_clip=1.0,
                             max_abs_loss=None, param_dtype="float32", early_stop=None)
    unlearn(model, None, QuantizedForget(GDR(GA(), alpha=1.0), RTN4), BLOCKS, BLOCKS, settings)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def _check(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["device=cpu", *overrides])
    return check_config(cfg)


@pytest.mark.parametrize("method", ["quail_shift", "quail_postquant", "fq_ga_gdr"])
def test_the_variants_compose_and_build(method):
    _, parts = _check(f"method={method}")
    assert parts.method is not None


def test_variant_config_errors_are_specific():
    with pytest.raises(ConfigError, match="space"):
        _check("method=quail", "method.hinge.space=quantised")
    with pytest.raises(ConfigError, match="auto_margin.kind"):
        _check("method=quail", "method.auto_margin.kind=step")
    with pytest.raises(ConfigError, match="LoRA"):
        _check("method=lora_ga_gdr", "+method.fake_quant._target_=quail_repro.methods.quantized.QuantizedForget",
               "+quant@method.fake_quant.quantizer=rtn_int4")


def test_the_variants_run_on_the_classification_task(tmp_path):
    """quantizer shift, hinge after quantization and the fake-quant comparator on a classifier, at toy size."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "quail_repro", "-m", "+experiment=toy_classification", "device=cpu",
                           "method=quail_shift,quail_postquant,fq_ga_gdr", "logger=none", "quant=[none,rtn_int4]",
                           f"paths.cache={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}"],
                          cwd=Path(CONF_DIR).parent, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {r["method"]: r for r in (json.loads(p.read_text()) for p in sweep.glob("*/results.json"))}
    assert set(runs) == {"quail_shift", "quail_postquant", "fq_ga_gdr"} and all(r["status"] == "ok" for r in runs.values())
    assert runs["quail_shift"]["unlearning"]["margin"] > 0  # the quantizer's own logit shift on the forget posts
    assert runs["quail_shift"]["unlearning"]["margin"] == runs["quail_postquant"]["unlearning"]["margin"]
