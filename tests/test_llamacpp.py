"""llama.cpp's own quantizer (quant/llama_cpp.py, the optional extra llama-cpp-python): the configs
build, the GGUF export is exact and in llama.cpp's layout, a missing extra or a model llama.cpp
cannot run is one recorded failed precision; with the extra installed (scripts/setup_llamacpp.sh),
the quantized tensors lie on their format's grid, close to the full-precision weights."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from quail_repro.build import from_config
from quail_repro.errors import ConfigError
from quail_repro.pipeline import run
from quail_repro.quant.gguf import CODE_RANGE, block_grid
from quail_repro.quant.llama_cpp import _permute, export_gguf, read_gguf

CONF = Path(__file__).resolve().parent.parent / "conf"
HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
needs_llama_cpp = pytest.mark.skipif(not HAVE_LLAMA_CPP, reason="the llamacpp extra is not installed")
PRECISIONS = ["llamacpp_q4_k_m", "llamacpp_q5_k_m", "llamacpp_q6_k", "llamacpp_q8_0"]


def cfg(*overrides, experiment="toy"):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"+experiment={experiment}", "device=cpu", "logger=none", *overrides])


@pytest.mark.parametrize("name", PRECISIONS)
def test_the_configs_build_a_quantizer_with_every_setting_described(name):
    d = from_config(cfg(f"quant=[{name}]").quant[name]).describe()
    assert d["name"] == name and d["method"] == "llama.cpp"
    assert d["ftype"] == name.removeprefix("llamacpp_").upper() and "llama_cpp_python" in d and "gguf" in d


@pytest.mark.parametrize("override, option", [("quant.llamacpp_q8_0.ftype=Q3_X", "ftype"),
                                              ("quant.llamacpp_q8_0.threads=0", "threads")])
def test_a_bad_setting_is_a_config_error_naming_it(override, option):
    with pytest.raises(ConfigError, match=option):
        from_config(cfg("quant=[llamacpp_q8_0]", override).quant.llamacpp_q8_0)


def test_q_and_k_rows_are_reordered_as_llama_cpp_rotates_adjacent_pairs():
    # one head of 4 dims: HF rotates (x0, x2) and (x1, x3); llama.cpp rotates adjacent rows
    rows = np.arange(4, dtype=np.float32)[:, None]
    assert _permute(rows, 1)[:, 0].tolist() == [0, 2, 1, 3]
    w = np.random.default_rng(0).normal(size=(12, 5)).astype(np.float32)  # 2 heads of 6
    assert _permute(w, 2)[:6, 0].tolist() == w[[0, 3, 1, 4, 2, 5], 0].tolist()
    assert np.array_equal(_permute(_permute(w, 2), 2, inverse=True), w)


def test_the_float32_export_reads_back_exactly_with_the_model_metadata(tiny_llama, tmp_path):
    import gguf

    path, model = tiny_llama
    export_gguf(model, str(path), tmp_path / "m.gguf")
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    fields = {name: f.contents() for name, f in reader.fields.items() if not name.startswith("tokenizer.ggml.")}
    assert fields["general.architecture"] == "llama" and fields["llama.block_count"] == 2
    assert (fields["llama.attention.head_count"], fields["llama.attention.head_count_kv"]) == (4, 2)
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == model.config.vocab_size
    back = read_gguf(tmp_path / "m.gguf", model)
    state = model.state_dict()
    assert set(back) == set(state)
    assert all(kind == "F32" and np.array_equal(v, state[k].numpy()) for k, (kind, v) in back.items())


def test_a_model_llama_cpp_cannot_run_here_is_named():
    from transformers import BertConfig, BertForSequenceClassification

    bert = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=64))
    with pytest.raises(ConfigError, match="Llama causal LMs only.*'bert'"):
        export_gguf(bert, ".", "unused.gguf")


@pytest.mark.skipif(HAVE_LLAMA_CPP, reason="the extra is installed here")
def test_without_the_extra_the_precision_fails_naming_it_and_the_others_run(tmp_path):
    res = run(cfg(f"paths.cache={tmp_path / 'cache'}", "method=target", "quant=[none,llamacpp_q4_k_m]"),
              tmp_path / "run").to_dict()
    assert res["status"] == "partial" and res["metrics"]["none"]["knowmem_f"] is not None
    assert res["metrics"]["llamacpp_q4_k_m"]["status"] == "failed"
    assert "quail_repro[llamacpp]" in res["metrics"]["llamacpp_q4_k_m"]["error"]


def test_on_the_classifier_it_is_one_failed_precision_not_a_crashed_run(tmp_path):
    res = run(cfg("method=target", f"paths.cache={tmp_path / 'cache'}", "quant=[none,llamacpp_q8_0]",
                  experiment="toy_classification"), tmp_path / "run").to_dict()
    assert res["status"] == "partial" and res["metrics"]["none"]["acc_forget"] is not None
    failed = res["metrics"]["llamacpp_q8_0"]
    assert failed["status"] == "failed" and ("Llama causal LMs only" in failed["error"] or "llamacpp" in failed["error"])


# -- with llama.cpp ------------------------------------------------------------------------------


def _on_grid(kind: str, raw: np.ndarray, values: np.ndarray) -> None:
    step, offset = block_grid(kind, raw)
    codes = (values.reshape(step.shape) - offset) / np.where(step == 0, 1, step)
    assert np.allclose(codes, np.rint(codes), atol=1e-3), f"{kind}: values off the grid"
    low, high = CODE_RANGE[kind]
    assert low <= np.rint(codes).min() and np.rint(codes).max() <= high, kind


@needs_llama_cpp
@pytest.mark.parametrize("ftype, expected", [("Q8_0", {"Q8_0"}), ("Q4_K_M", {"Q4_K", "Q6_K"}),
                                             ("Q6_K", {"Q6_K"}), ("Q5_K_M", {"Q5_K", "Q6_K"})])
def test_llama_cpp_stores_each_weight_on_its_formats_grid_near_the_original(tiny_llama, tmp_path, ftype, expected):
    import gguf

    from quail_repro.quant.llama_cpp import quantize_gguf

    path, model = tiny_llama
    export_gguf(model, str(path), tmp_path / "f32.gguf")
    quantize_gguf(tmp_path / "f32.gguf", tmp_path / "q.gguf", ftype, threads=2)
    back = read_gguf(tmp_path / "q.gguf", model)
    state = model.state_dict()
    kinds = {kind for name, (kind, _) in back.items() if state[name].dim() == 2}
    assert kinds == expected
    assert back["lm_head.weight"][0] in ({"Q8_0"} if ftype == "Q8_0" else {"Q6_K"})  # the head: more bits
    raw = {t.name: (t.tensor_type.name, np.asarray(t.data)) for t in gguf.GGUFReader(str(tmp_path / "q.gguf")).tensors}
    w = state["model.layers.0.mlp.up_proj.weight"].numpy()
    kind, values = back["model.layers.0.mlp.up_proj.weight"]
    _on_grid(kind, raw["blk.0.ffn_up.weight"][1], values)
    step, _ = block_grid(kind, raw["blk.0.ffn_up.weight"][1])
    # rounding to the nearest code: within half a step (Q8_0's fp16 scale adds a little), but the
    # k-quants' scale search may clip a block's extremes (up to 1.13 steps seen, Q5_K)
    in_steps = np.abs(values - w).reshape(step.shape) / np.abs(step)
    assert in_steps.max() <= (0.6 if kind == "Q8_0" else 1.5) and np.quantile(in_steps, 0.99) <= 0.55
    assert 0 < np.abs(values - w).mean() < np.abs(w).mean() / (20 if kind == "Q8_0" else 4)


@needs_llama_cpp
def test_the_analysis_codes_are_ggmls_own_quantization_of_the_weight(tiny_llama, tmp_path):
    from quail_repro.quant.llama_cpp import LlamaCppQuantizer, ggml_round_trip, quantize_gguf, row_type

    path, model = tiny_llama
    export_gguf(model, str(path), tmp_path / "f32.gguf")
    quantize_gguf(tmp_path / "f32.gguf", tmp_path / "q.gguf", "Q4_K_M", threads=1)
    w = model.state_dict()["model.layers.0.mlp.up_proj.weight"]
    kind, in_file = read_gguf(tmp_path / "q.gguf", model)["model.layers.0.mlp.up_proj.weight"]
    assert kind == row_type("Q4_K_M", 256) == "Q4_K"
    assert np.array_equal(ggml_round_trip(w.numpy(), "Q4_K")[1], in_file)  # the file's bytes, tensor by tensor
    assert row_type("Q4_K_M", 192) == "Q5_0" and row_type("Q6_K", 192) == "Q8_0"  # llama.cpp's fallbacks
    codes, values, step, zero = LlamaCppQuantizer("q", "Q4_K_M", 1).bucket_codes(w)
    assert np.array_equal(values.numpy(), in_file)
    assert codes.min() >= 0 and codes.max() <= 15 and (step > 0).all()
    # value = step * code + offset, and the zero code is where offset puts 0
    offset = values - step * codes.float()
    assert torch.allclose(offset, -step * zero.float(), atol=float(step.max()) / 2 + 1e-6)


@needs_llama_cpp
def test_the_consistency_check_runs_and_agrees_at_toy_size(tmp_path):
    """scripts/llamacpp_consistency.py on the toy target: the script cannot rot, and its verdict holds."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(root / "scripts" / "llamacpp_consistency.py"), "--texts", "2",
                           "+experiment=toy", "device=cpu", f"paths.cache={tmp_path / 'cache'}"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "identical generations" in proc.stdout and "consistent" in proc.stdout and ": yes" in proc.stdout


@needs_llama_cpp
def test_the_deployment_table_runs_at_toy_size(tmp_path):
    """+experiment=[table_deploy,toy], one seed, two rows (~1 min): every precision is a number or a
    recorded failure (here GPTQ and AWQ, whose extra is in another venv), llama.cpp's have their
    recovery ratio and bucket analysis like the others, and the table is written."""
    import json
    import os
    import subprocess
    import sys

    sweep = tmp_path / "sweep"
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "quail_repro", "+experiment=[table_deploy,toy]", "device=cpu",
                           "logger=none", "seed=0", "method=target,ga_gdr", f"hydra.sweep.dir={sweep}"],
                          cwd=root, capture_output=True, text=True,
                          env=dict(os.environ, QUAIL_CACHE_DIR=str(tmp_path / "cache")), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "## table_deploy" in proc.stdout and (sweep / "table_deploy.csv").is_file()
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    assert [r["method"] for r in results] == ["target", "ga_gdr"]
    unlearned = results[1]
    for q in ("none", "rtn_int4", "bnb_nf4", "llamacpp_q4_k_m", "llamacpp_q8_0"):
        assert unlearned["metrics"][q]["knowmem_f"] is not None, q
    for q in ("llamacpp_q4_k_m", "llamacpp_q8_0"):
        assert q in unlearned["recovery"] and 0 < unlearned["analysis"][q]["bucket_overlap"] <= 1
    if importlib.util.find_spec("gptqmodel") is None:
        assert all(unlearned["metrics"][q]["status"] == "failed" for q in ("gptq_int4", "awq_int4"))
