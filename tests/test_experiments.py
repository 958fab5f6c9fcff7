"""Every experiment config composes, sets up its sweep, and every job of its grid composes."""
import shlex
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict

from quail_repro.report import expand_grid

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
TABLES = ["table1", "table2", "table3", "table4", "table5", "failure_table1", "recovery_search", "scale_search",
          "table2_comparators", "leverage", "table_deploy", "table_deploy_classification"]
BASELINES = ["ga", "ga_gdr", "ga_klr", "npo", "npo_gdr", "npo_klr"]
QUAIL = ["quail", "quail_ga", "quail_ga_klr", "quail_npo", "quail_npo_gdr", "quail_npo_klr"]
VARIANTS = ["quail_shift", "quail_postquant", "fq_ga_gdr"]
QUANT_4BIT = ["none", "rtn_int4", "bnb_nf4"]


def _compose(overrides, hydra=True):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra)


def test_every_table_is_listed():
    assert sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")) == \
        sorted(TABLES + ["toy", "toy_learns", "classification", "toy_classification"])


@pytest.mark.parametrize("name", TABLES)
def test_a_table_is_one_multirun_command(name):
    cfg = _compose([f"+experiment={name}"])
    assert cfg.hydra.mode.name == "MULTIRUN"  # no -m needed
    assert cfg.report.name == name and cfg.report.layout in ("muse", "buckets", "recovery", "scale", "classification",
                                                                     "leverage") \
        and cfg.report.claim
    assert f"tables/{name}/" in cfg.hydra.sweep.dir
    assert cfg.logger._target_.endswith("WandbLogger")  # W&B is the default tracker


@pytest.mark.parametrize("name", TABLES)
def test_every_job_of_the_grid_composes(name):
    jobs, swept = expand_grid(_compose([f"+experiment={name}"]).hydra)
    assert jobs and swept
    for overrides in jobs:  # what Hydra's sweeper validates before launching
        job = _compose(overrides, hydra=False)
        assert job.report.name == name


def grid(name, *extra):
    return expand_grid(_compose([f"+experiment={name}", *extra]).hydra)


def test_table_rows_and_precisions():
    jobs, swept = grid("table2")
    assert swept == ["method"]
    assert [j[0] for j in jobs] == [f"method={m}" for m in ["target", "retrain", *BASELINES, *QUAIL, *VARIANTS]]
    assert list(_compose(["+experiment=table2"]).quant) == ["none", "rtn_int8", "bnb_nf4"]
    books = _compose(["+experiment=table3"])
    assert books.dataset.name == "mini_books" and list(books.quant) == ["none", "rtn_int8", "bnb_nf4"]
    assert [j[0] for j in grid("table3")[0]] == [f"method={m}" for m in ["target", "retrain", *BASELINES, *QUAIL]]
    jobs, _ = grid("table1")
    assert [j[0] for j in jobs] == [f"method={m}" for m in BASELINES]
    assert list(_compose(["+experiment=table1"]).quant) == ["rtn_int4", "rtn_int8", "bnb_nf4", "bnb_int8"]
    jobs, swept = grid("failure_table1")
    assert swept == ["dataset", "method"] and len(jobs) == 16


def test_table5_changes_one_setting_per_row():
    jobs, swept = grid("table5")
    assert swept == ["+experiment/quail_ablation"]
    base = _compose(["+experiment=table5"], hydra=False)
    assert base.method.name == "quail"
    assert [q for q in base.quant] == ["none", "rtn_int8", "rtn_int4", "rtn_int3", "rtn_int2"]
    for overrides in jobs:
        arm = overrides[0].split("=")[1]
        cfg = _compose(overrides, hydra=False)
        changed = {k for k in ("margin", "gamma", "distance") if cfg.method.hinge[k] != base.method.hinge[k]}
        if cfg.method.auto_margin.quantizer != base.method.auto_margin.quantizer:
            changed.add("bits")
        if cfg.method.auto_margin.kind != base.method.auto_margin.kind:
            changed.add("margin_" + cfg.method.auto_margin.kind)
        if cfg.method.hinge.space != base.method.hinge.space:  # the hinge after quantization, its own margin
            assert arm == "after_quantization" and changed == {"margin_quantizer_shift"}
            continue
        assert len(changed) == (0 if arm == "default" else 1), arm
        assert arm == "default" or arm.startswith(changed.pop())


def test_scale_search_scales_width_and_stores_weights_in_bf16():
    jobs, swept = grid("scale_search")
    assert swept == ["+experiment/scale_width", "method.lr", "seed", "+experiment/scale_storage"] and len(jobs) == 24
    assert [next(o for o in j if "scale_storage" in o) for j in jobs[:2]] == ["+experiment/scale_storage=fp32",
                                                                           "+experiment/scale_storage=bf16"]
    seen = set()
    for overrides in jobs:
        cfg = _compose(overrides, hydra=False)
        arch, width = cfg.model.arch, cfg.model.arch.hidden_size
        assert arch.intermediate_size % 64 == 0 and abs(arch.intermediate_size / width - 8 / 3) < 0.2
        assert arch.num_attention_heads == arch.num_key_value_heads == width // 64 and arch.num_hidden_layers == 4
        bf16 = cfg.method.param_dtype == "bfloat16_emulated"
        assert cfg.model.train.param_dtype == ("bfloat16_emulated" if bf16 else "native")
        assert cfg.model.dtype == "float32" and cfg.method.max_steps == 200 and list(cfg.quant) == QUANT_4BIT
        seen.add((width, bf16, cfg.method.lr, cfg.seed))
    assert seen == {(w, b, lr, s) for w in (128, 256, 512) for b in (False, True) for lr in (1e-5, 1e-4)
                    for s in (0, 1)}


def test_the_leverage_grid_crosses_depth_and_width_at_the_default_and_runs_the_largest_first():
    jobs, swept = grid("leverage")
    assert len(jobs) == 5 * 2 * 2 * 2
    shapes = []
    for overrides in jobs[:20:4]:  # one job per architecture, in launch order
        arch = _compose(overrides, hydra=False).model.arch
        shapes.append((arch.num_hidden_layers, arch.hidden_size))
    assert shapes == [(16, 192), (8, 192), (4, 256), (4, 192), (4, 128)]
    # seed 0's whole grid first: a sweep cut short still has one seed of every point
    assert {_compose(j, hydra=False).seed for j in jobs[:20]} == {0}
    first = [o for o in jobs[0] if not o.startswith("+experiment/leverage_update=")]
    confined, unlearning = (_compose(first + [f"+experiment/leverage_update={u}"], hydra=False)
                            for u in ("confined", "unlearning"))
    assert confined.method.param_dtype == unlearning.method.param_dtype == "bfloat16_emulated"
    assert confined.model.train.param_dtype == "bfloat16_emulated"
    assert (confined.method.lr, confined.method.early_stop, confined.method.max_steps) == (1e-5, None, 200)
    assert (unlearning.method.lr, unlearning.method.early_stop, unlearning.method.max_steps) == (1e-4, None, 100)
    # the seed trains the target too: the two seeds of a point are two targets
    epochs = [_compose(j, hydra=False).model.train.epochs for j in jobs[:2]]
    assert epochs[0] != epochs[1]  # consecutive jobs train different targets: two workers never wait on one
    assert {_compose(j, hydra=False).model.train.seed for j in jobs[::20]} == {0, 1}  # the seed trains the target


def test_the_gpu_leverage_script_composes_on_a_cpu():
    """scripts/gpu_leverage.sh's sweep, with device=cpu for device=cuda: every job composes, in
    native bf16, largest shape first."""
    script = (ROOT / "scripts" / "gpu_leverage.sh").read_text()
    line = next(ln for ln in script.splitlines() if "-m quail_repro +experiment=" in ln and not ln.startswith("#"))
    grid_text = script[script.index("\nGRID=(") + len("\nGRID=("):]
    grid_text = grid_text[:grid_text.index(")\n")]
    assert '"${GRID[@]}"' in line and "device=$DEVICE" in line and "DEVICE=cuda" in script
    fixed = [a for a in shlex.split(line.rstrip("\\ ")) if a.startswith("+experiment=") or a == "logger=none"]
    overrides = fixed + shlex.split(grid_text) + ["device=cpu"]
    parsed = OverridesParser.create().parse_overrides(overrides)
    hydra_cfg = _compose([o.input_line for o in parsed if not o.is_sweep_override()]).hydra
    with open_dict(hydra_cfg):  # as Hydra's sweeper sees the command line: sweeps replace the experiment's params
        hydra_cfg.overrides.task = overrides
    jobs, swept = expand_grid(hydra_cfg)
    assert len(jobs) == 8 and "+experiment/leverage_arch" in swept
    shapes = []
    for job in jobs:
        cfg = _compose(job, hydra=False)
        assert cfg.report.name == "leverage" and cfg.device == "cpu"
        assert (cfg.model.dtype, cfg.model.train.param_dtype, cfg.method.param_dtype) == ("bfloat16", "native", "native")
        shapes.append((cfg.model.arch.num_hidden_layers, cfg.model.arch.hidden_size))
    assert shapes[0] == (4, 2048) and set(shapes) == {(4, 2048), (16, 1024), (4, 1024), (32, 192)}


def test_real_models_by_overriding_model_and_dataset():
    jobs, swept = grid("table2", "model=llama2_7b_muse_news", "dataset=muse_news", "eval=muse")
    cfg = _compose(jobs[2], hydra=False)
    assert (cfg.model.name, cfg.dataset.name, cfg.eval.knowmem.trailing_space) == ("llama2_7b_muse_news", "muse_news", True)
    jobs, swept = grid("failure_table1", "dataset=muse_books", "model=llama2_7b_muse_books")
    assert swept == ["method"] and len(jobs) == 8  # the command line replaces the swept datasets


def test_table4_rows_and_precisions():
    jobs, _ = grid("table4")
    assert [j[0] for j in jobs] == [f"method={m}" for m in ["target", "retrain", *BASELINES, "quail", *VARIANTS]]
    cfg = _compose(["+experiment=table4"], hydra=False)
    assert list(cfg.quant) == ["none", "rtn_int8", "bnb_nf4"]
    assert (cfg.dataset.name, cfg.model.name, cfg.eval.task) == ("mini_tweets", "minilm_cls", "classification")


def test_table2_comparators_rows_and_precisions():
    jobs, _ = grid("table2_comparators")
    assert [j[0] for j in jobs] == [f"method={m}" for m in ["target", "retrain", "ga_gdr", "quail", "sure", "lora_ga_gdr"]]
    cfg = _compose(["+experiment=table2_comparators"], hydra=False)
    assert list(cfg.quant) == ["none", "rtn_int8", "bnb_nf4", "gguf_q8_0", "gguf_q5_1", "gguf_q5_0", "gguf_q4_1",
                               "gguf_q4_0"]
    assert _compose(["+experiment=table2_comparators", "method=sure"], hydra=False).method.saliency.percentile == 50
    assert _compose(["+experiment=table2_comparators", "method=lora_ga_gdr"], hydra=False).method.lora.r == 8

@pytest.mark.parametrize("name, task", [("table_deploy", "mini_news"), ("table_deploy_classification", "mini_tweets")])
def test_the_deployment_tables_rows_precisions_and_seeds(name, task):
    jobs, _ = grid(name)
    rows = ["target", "retrain", "ga_gdr", "npo_gdr", "quail", "sure", "lora_ga_gdr"]
    # seed slowest: a sweep cut short has every row of seed 0
    assert [j[:2] for j in jobs] == [[f"seed={s}", f"method={m}"] for s in range(3) for m in rows]
    cfg = _compose([f"+experiment={name}"], hydra=False)
    assert list(cfg.quant) == ["none", "rtn_int4", "bnb_nf4", "gptq_int4", "awq_int4", "llamacpp_q4_k_m",
                               "llamacpp_q8_0"]
    assert cfg.dataset.name == task


@pytest.mark.parametrize("name", ["table_deploy", "table_deploy_classification"])
def test_the_deployment_tables_calibrate_gptq_and_awq_on_a_split_their_task_has(name):
    # the classification table once calibrated on retain2, which posts do not have: every GPTQ and AWQ
    # cell failed on the split before GPTQModel was even asked
    from types import SimpleNamespace

    from quail_repro.build import from_config
    from quail_repro.data.tweets import TweetCorpus

    train = [{"text": f"post {i}", "label": 0} for i in range(4)]
    corpus = TweetCorpus("posts", ["a"], {"train": train, "val": [], "test": []}, forget=[0], poisoned={}) \
        if name.endswith("classification") else SimpleNamespace(raw={"retain2": ["the town of Avel"], "forget": ["x"]})
    cfg = _compose([f"+experiment={name}"], hydra=False)
    for precision in ("gptq_int4", "awq_int4"):
        quantizer = from_config(cfg.quant[precision])
        quantizer.use_corpus(corpus)  # a ConfigError names the split when the task lacks it
        assert quantizer._texts and "post 0" not in quantizer._texts  # never the forget set


def test_experiments_take_toy_sizes():
    cfg = _compose(["+experiment=[table2,toy]"], hydra=False)
    assert cfg.report.name == "table2" and list(cfg.quant) == ["none", "rtn_int8", "bnb_nf4"]
    assert cfg.model.arch.hidden_size == 64 and cfg.method.max_steps == 3


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_wandb_sweep_definitions_run_the_harness_with_hydra_overrides(path):
    sweep = yaml.safe_load(path.read_text())
    assert sweep["method"] in ("grid", "random", "bayes") and sweep["parameters"]
    cmd = sweep["command"]
    assert cmd[cmd.index("-m") + 1] == "quail_repro" and "${args_no_hyphens}" in cmd
    fixed = [a for a in cmd[cmd.index("-m") + 2:] if not a.startswith("${")]
    for key, spec in sweep["parameters"].items():
        values = spec.get("values") or [spec.get("value", spec.get("min"))]
        for v in values:  # each value is a valid Hydra override on top of the fixed ones
            OverridesParser.create().parse_overrides([f"{key}={v}"])
            cfg = _compose([*fixed, f"{key}={v}"], hydra=False)
            assert cfg is not None
