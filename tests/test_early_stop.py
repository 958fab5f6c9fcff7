"""method.early_stop (train.EarlyStop): the run ends at the first check whose forget NLL reaches
ratio x the reference split's NLL, and checking does not change the trajectory."""
from dataclasses import replace
from types import SimpleNamespace

import math
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from quail_repro import losses
from quail_repro.errors import ConfigError
from quail_repro.methods.ga import GA
from quail_repro.methods.regularizers import GDR
from quail_repro.train import CAUSAL_LM, EarlyStop, UnlearnConfig, mean_nll_over, unlearn

SETTINGS = UnlearnConfig(lr=3e-3, epochs=4, batch_size=2, max_steps=None, seed=0, weight_decay=0.0, grad_clip=1.0,
                         max_abs_loss=None, param_dtype="float32", early_stop=None)


def _model():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16))


def _blocks(seed, n=6):
    return torch.randint(0, 64, (n, 16), generator=torch.Generator().manual_seed(seed))


FORGET, RETAIN, HOLDOUT = _blocks(1), _blocks(2), _blocks(3)


def _run(early_stop, **kw):
    model = _model()
    history = unlearn(model, None, GDR(GA(), alpha=1.0), FORGET, RETAIN, replace(SETTINGS, early_stop=early_stop, **kw),
                      stop_blocks=HOLDOUT)
    return model, history


def test_mean_nll_over_uniform_logits_is_log_vocab_and_skips_ignored_tokens():
    class Uniform(torch.nn.Module):
        device = torch.device("cpu")

        def forward(self, input_ids, attention_mask):
            return SimpleNamespace(logits=torch.zeros(*input_ids.shape, 8))

    blocks = torch.tensor([[1, 2, 3, 4], [5, 6, losses.IGNORE_INDEX, losses.IGNORE_INDEX]])
    model = Uniform().train()
    assert mean_nll_over(model, blocks, 1, CAUSAL_LM) == pytest.approx(math.log(8))  # 3 + 1 targets, each log 8
    assert model.training  # mode restored


def test_a_threshold_never_reached_runs_every_step_and_one_reached_at_once_stops_at_the_first_check():
    _, full = _run(EarlyStop(every=2, ratio=1e6, reference_split="holdout"))
    assert len(full) == 12 and not any(r.get("stopped") for r in full)
    assert [r["step"] for r in full if "forget_nll" in r] == [1, 3, 5, 7, 9, 11]
    _, short = _run(EarlyStop(every=3, ratio=1e-6, reference_split="holdout"))
    assert len(short) == 3 and short[-1]["stopped"] and short[-1]["forget_nll"] >= short[-1]["stop_threshold"]


def test_the_run_stops_at_the_first_check_past_the_threshold_with_the_model_of_a_run_capped_there():
    probe = EarlyStop(every=2, ratio=1e6, reference_split="holdout")
    _, full = _run(probe)
    checks = [r for r in full if "forget_nll" in r]
    holdout_nll = checks[0]["stop_threshold"] / 1e6
    rising = [c["forget_nll"] for c in checks]
    assert rising[-1] > rising[0], "gradient ascent should raise the forget NLL"
    # a threshold just under the third check's value: the first check at or above it is where it stops
    threshold = rising[2] * (1 - 1e-6)
    expected = next(i for i, v in enumerate(rising) if v >= threshold)
    model, history = _run(EarlyStop(every=2, ratio=threshold / holdout_nll, reference_split="holdout"))
    assert len(history) == 2 * (expected + 1) and history[-1]["stopped"]
    capped, _ = _run(None, max_steps=2 * (expected + 1))
    for (name, a), b in zip(model.state_dict().items(), capped.state_dict().values()):
        assert torch.equal(a, b), name  # checking in eval mode without gradients changes nothing


def test_bad_early_stop_settings_fail_when_read():
    base = {f: getattr(SETTINGS, f) for f in SETTINGS.__dataclass_fields__}
    with pytest.raises(ConfigError, match="every"):
        UnlearnConfig.from_method({**base, "early_stop": {"every": 0, "ratio": 1.0, "reference_split": "holdout"}})
    with pytest.raises(ConfigError, match="reference_split"):
        UnlearnConfig.from_method({**base, "early_stop": {"every": 5, "ratio": 1.0}})
    with pytest.raises(ConfigError, match="no blocks"):
        unlearn(_model(), None, GA(), FORGET, None, replace(SETTINGS, early_stop=EarlyStop(5, 1.0, "holdout")))
