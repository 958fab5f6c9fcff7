"""The whole chain at toy size: data -> target/retrain -> unlearn -> quantize -> evaluate."""
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from quail_repro.errors import ConfigError, DataError
from quail_repro.pipeline import run
from quail_repro.results import (SCHEMA_VERSION, PrecisionMetrics, Results, claim_run_dir, owns,
                                 write_generations, write_results)

CONF = Path(__file__).resolve().parent.parent / "conf"
METRICS = {"verbmem_f", "knowmem_f", "knowmem_r", "privleak", "privleak_auc"}


def toy_cfg(cache, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=["+experiment=toy", "device=cpu", f"paths.cache={cache}", *overrides])


def run_dict(cfg, run_dir):
    """run()'s Results as results.json holds them."""
    return run(cfg, run_dir).to_dict()


def cache_entries(cache: Path):
    return sorted(p.name for p in cache.glob("*/*") if p.is_dir())


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    run_dir = tmp_path_factory.mktemp("run")
    cfg = toy_cfg(cache, "method=ga_gdr", "quant=[none,rtn_int4,bnb_nf4]")
    return cache, run_dir, run_dict(cfg, run_dir)


def test_results_json_has_every_precision(toy_run):
    cache, run_dir, results = toy_run
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results, default=str))
    assert on_disk["status"] == "ok"
    assert (on_disk["model"], on_disk["dataset"], on_disk["method"], on_disk["seed"]) == \
        ("tiny_llama", "mini_news", "ga_gdr", 0)
    assert list(on_disk["metrics"]) == ["none", "rtn_int4", "bnb_nf4"]
    for m in on_disk["metrics"].values():
        assert set(m) == METRICS
        assert 0 <= m["verbmem_f"] <= 100 and 0 <= m["knowmem_f"] <= 100
    assert on_disk["quant"]["bnb_nf4"]["quant_type"] == "nf4"
    gens = json.loads((run_dir / "generations" / "rtn_int4.json").read_text())
    assert {"verbmem_f", "knowmem_f", "knowmem_r", "privleak"} <= set(gens)


def test_analysis_per_quantized_precision_with_figures(toy_run):
    _, run_dir, results = toy_run
    assert list(results["analysis"]) == ["rtn_int4", "bnb_nf4"]  # full precision has no codes
    for stats in results["analysis"].values():
        assert 0.0 <= stats["bucket_overlap"] <= 1.0
        assert 0.0 <= stats["frac_below_half_step"] <= 1.0
        assert stats["median_abs_dw"] > 0 and stats["logit_shift_full"] > 0
        assert stats["logit_shift_quant"] >= 0 and stats["per_layer"]
        assert stats["kl_full"] > 0 and stats["kl_quant"] >= 0
        assert stats["transfer_coef"] is not None
        assert 0 < stats["frac_changed"] <= 1 and len(stats["by_abs_w_decile"]) == 10
        assert sum(g["share_of_weights"] for g in stats["by_code"].values()) == pytest.approx(1.0)
    for fig in ("dw_over_step_hist.png", "bucket_overlap_per_layer.png"):
        assert (run_dir / fig).stat().st_size > 1000


def test_quail_records_its_auto_margin(toy_run, tmp_path):
    cache, _, _ = toy_run
    res = run_dict(toy_cfg(cache, "method=quail", "quant=[none]"), tmp_path)
    assert res["status"] == "ok" and res["method"] == "quail"
    assert res["unlearning"]["margin"] > 0


def test_recovery_ratio_by_its_definition(toy_run):
    cache, _, results = toy_run
    target = run_dict(toy_cfg(cache, "method=target", "quant=[none,rtn_int4,bnb_nf4]"), cache.parent / "target_row")
    assert list(results["recovery"]) == ["rtn_int4", "bnb_nf4"]
    for q in ("rtn_int4", "bnb_nf4"):
        for k in ("knowmem_f", "verbmem_f"):
            full, mine, tgt = results["metrics"]["none"][k], results["metrics"][q][k], target["metrics"][q][k]
            one_item = 100 / len(results["recovery_items"][q][k]["full"]) if q in results["recovery_items"] else 100
            removed = target["metrics"]["none"][k] - full >= one_item - 1e-9
            expected = (mine - full) / (tgt - full) if removed and tgt > full else None
            assert results["recovery"][q][k] == (pytest.approx(expected) if expected is not None else None)


def test_the_printed_table_shows_every_precision_and_the_recovery(toy_run):
    from quail_repro.results import format_table

    _, _, results = toy_run
    text = format_table(Results.from_dict(results))
    assert text.splitlines()[0] == "ga_gdr on mini_news (tiny_llama): ok"
    assert [line.split()[0] for line in text.splitlines()[2:5]] == ["none", "rtn_int4", "bnb_nf4"]
    assert text.splitlines()[-1].startswith("KnowMem-f recovery ratio: rtn_int4 ")


def test_results_record_the_machine_that_made_them(toy_run):
    import torch

    _, _, results = toy_run
    m = results["machine"]
    assert results["schema_version"] == SCHEMA_VERSION
    assert m["torch_threads"] == torch.get_num_threads() and m["torch"] == torch.__version__
    assert m["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and m["cpu"]
    assert m["gpu"] is None or torch.cuda.is_available()
    env = m["numerics"]  # what the cache keys carry
    assert env["device_kind"] == "cpu" and env["threads"] == m["torch_threads"]
    assert env["cpu_capability"] == m["cpu_capability"] and len(env["fingerprint"]) == 16
    assert Results.from_dict(results).machine == m


def test_results_record_which_machine_built_each_cache_entry(toy_run, tmp_path):
    cache, _, first = toy_run
    used = set(first["provenance"])
    assert {name.split("-")[0] for name in used} >= {"corpus", "tokenizer", "target", "retrain", "unlearn", "eval"}
    this_machine = {k: v for k, v in first["machine"].items() if k != "numerics"}
    assert all(p["built_by"] == this_machine and p["built_at"] for p in first["provenance"].values())
    # where the time went: each entry's build, all inside the run's own wall-clock
    assert all(0 <= p["build_seconds"] for p in first["provenance"].values())
    assert sum(p["build_seconds"] for p in first["provenance"].values()) <= first["wall_seconds"]
    # a second run reuses every entry and reports their builder, not itself
    again = run_dict(toy_cfg(cache, "method=ga_gdr", "quant=[none,rtn_int4,bnb_nf4]"), tmp_path)
    assert again["provenance"] == first["provenance"] and again["wall_seconds"] < first["wall_seconds"]


def test_every_stage_is_cached(toy_run):
    cache, _, _ = toy_run
    stages = {name.split("-")[0] for name in cache_entries(cache)}
    assert stages == {"corpus", "tokenizer", "target", "retrain", "privleak_ref", "unlearn", "eval", "analysis",
                      "figures"}


def test_second_run_reuses_everything(toy_run, tmp_path, monkeypatch):
    cache, run_dir, first = toy_run
    before = cache_entries(cache)

    def no_drawing(*args, **kwargs):
        raise AssertionError("a cached run drew a figure again")

    monkeypatch.setattr("quail_repro.stages.plot_dw_histogram", no_drawing)
    monkeypatch.setattr("quail_repro.stages.plot_overlap_per_layer", no_drawing)
    again = run_dict(toy_cfg(cache, "method=ga_gdr", "quant=[none,rtn_int4,bnb_nf4]"), tmp_path)
    assert cache_entries(cache) == before
    assert again["metrics"] == first["metrics"]
    for fig in ("dw_over_step_hist.png", "bucket_overlap_per_layer.png"):  # copied from the cache
        assert (tmp_path / fig).read_bytes() == (run_dir / fig).read_bytes()


def test_a_new_precision_reuses_the_unlearned_model(toy_run, tmp_path):
    cache, _, _ = toy_run
    before = cache_entries(cache)
    run_dict(toy_cfg(cache, "method=ga_gdr", "quant=[rtn_int8]"), tmp_path)
    added = sorted(set(cache_entries(cache)) - set(before))
    assert [a.split("-")[0] for a in added] == ["analysis", "eval", "figures"]  # figures of the new analysis


def test_target_and_retrain_rows_evaluate_without_unlearning(toy_run, tmp_path):
    cache, _, _ = toy_run
    unlearned_before = [n for n in cache_entries(cache) if n.startswith("unlearn-")]
    for method in ("target", "retrain"):
        res = run_dict(toy_cfg(cache, f"method={method}", "quant=[none,rtn_int4]"), tmp_path / method)
        assert res["status"] == "ok" and res["method"] == method
        assert "analysis" not in res
    assert [n for n in cache_entries(cache) if n.startswith("unlearn-")] == unlearned_before


def test_exploding_loss_is_recorded_as_diverged(toy_run, tmp_path):
    cache, _, _ = toy_run
    res = run_dict(toy_cfg(cache, "method=ga", "method.max_abs_loss=1e-6", "quant=[none]"), tmp_path)
    assert res["status"] == "diverged"
    assert res["unlearning"]["step"] == 0 and "max_abs_loss" in res["unlearning"]["reason"]
    assert res["metrics"] == {}
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "diverged"


def test_nan_loss_is_recorded_as_diverged(toy_run, tmp_path):
    cache, _, _ = toy_run
    # a learning rate this large overflows the weights on the first step
    res = run_dict(toy_cfg(cache, "method=npo", "method.lr=1e30", "method.max_abs_loss=null", "quant=[none]"), tmp_path)
    assert res["status"] == "diverged"
    assert "not finite" in res["unlearning"]["reason"]


def test_a_quantizer_that_cannot_run_is_recorded_and_others_still_evaluate(toy_run, tmp_path):
    cache, _, _ = toy_run
    res = run_dict(toy_cfg(cache, "method=ga_gdr", "quant=[none,bnb_nf4]", "quant.bnb_nf4.blocksize=128"), tmp_path)
    assert res["status"] == "partial"
    assert res["metrics"]["bnb_nf4"]["status"] == "failed"
    assert "blocksize" in res["metrics"]["bnb_nf4"]["error"]
    assert set(res["metrics"]["none"]) == METRICS


def test_missing_dataset_fails_with_a_named_error(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["device=cpu", f"paths.cache={tmp_path}/cache", "dataset=muse_news",
                                           f"dataset.path={tmp_path}/no_such_corpus"])
    with pytest.raises(DataError, match="no_such_corpus"):
        run(cfg, tmp_path / "run")
    failed = json.loads((tmp_path / "run" / "results.json").read_text())
    assert failed["status"] == "failed" and "no_such_corpus" in failed["error"]


def test_a_bad_learning_rate_is_a_config_error(toy_run, tmp_path):
    cache, _, _ = toy_run
    with pytest.raises(ConfigError, match="method.lr"):
        run_dict(toy_cfg(cache, "method=ga", "method.lr=nan", "quant=[none]"), tmp_path)


def test_a_failing_run_never_overwrites_finished_results(tmp_path):
    write_results(tmp_path, Results("tiny_llama", "mini_news", "ga", 0, status="ok",
                                    metrics={"none": PrecisionMetrics(knowmem_f=1.0)}))
    path = write_results(tmp_path, Results("tiny_llama", "mini_news", "ga", 0, status="failed"))
    assert path.name == "results.failed.json"
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "ok"


def test_a_run_whose_folder_was_taken_over_writes_beside_the_new_runs_results(tmp_path):
    # a stopped sweep's orphaned worker finishing its job after a new sweep started in the same folder
    ok = lambda method: Results("tiny_llama", "mini_news", method, 0, status="ok",
                                metrics={"none": PrecisionMetrics(knowmem_f=1.0)})
    first = claim_run_dir(tmp_path)
    second = claim_run_dir(tmp_path)
    assert first != second and owns(tmp_path, second) and not owns(tmp_path, first)
    write_results(tmp_path, ok("quail"), second)
    write_generations(tmp_path, {"none": {"knowmem_f": []}}, first)
    path = write_results(tmp_path, ok("ga"), first)
    assert path.name == f"results.superseded-{first}.json" and json.loads(path.read_text())["method"] == "ga"
    assert json.loads((tmp_path / "results.json").read_text())["method"] == "quail"
    assert not (tmp_path / "generations").exists()


def test_base_stage_is_cached_and_target_and_retrain_start_from_it(tmp_path):
    cache = tmp_path / "cache"
    base = ["model.base.enabled=true", "model.base.n_entities=6", "model.base.train.epochs=1"]
    run_dict(toy_cfg(cache, *base, "method=target", "quant=[none]"), tmp_path / "a")
    bases = [n for n in cache_entries(cache) if n.startswith("base-")]
    assert len(bases) == 1
    for role in ("target", "retrain"):
        (entry,) = (cache / role).glob(f"{role}-*[0-9a-f]")
        assert json.loads((entry / "spec.json").read_text())["base"] == bases[0]
    trained = [n for n in cache_entries(cache) if n.split("-")[0] in ("base", "target", "retrain")]
    run_dict(toy_cfg(cache, *base, "method=retrain", "quant=[none]"), tmp_path / "b")
    assert [n for n in cache_entries(cache) if n.split("-")[0] in ("base", "target", "retrain")] == trained


def test_a_crash_that_is_not_a_quail_error_is_recorded_as_failed(toy_run, tmp_path, monkeypatch):
    cache, _, _ = toy_run

    def out_of_memory(*args):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr("quail_repro.stages.unlearn", out_of_memory)
    with pytest.raises(RuntimeError):
        run_dict(toy_cfg(cache, "method=ga", "quant=[none]"), tmp_path)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "failed" and res["error"] == "RuntimeError: CUDA out of memory" and res["method"] == "ga"


@pytest.mark.parametrize("override,named", [("method.lr=-1", "method.lr"), ("method.param_dtype=fp8", "method.param_dtype"),
                                            ("method.epochs=0", "method.epochs"), ("eval.batch_size=0", "batch_size"),
                                            ("model.dtype=fp8", "model.dtype"), ("device=tpu", "device")])
def test_a_bad_value_fails_before_any_stage_runs(tmp_path, override, named):
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError, match=named):
        run(toy_cfg(cache, "method=ga_gdr", override), tmp_path / "run")
    assert not cache.exists() or not list(cache.iterdir())  # nothing was generated or trained
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "failed"


def test_a_bad_hinge_setting_fails_before_any_stage_runs(tmp_path):
    with pytest.raises(ConfigError, match="method.hinge.distance"):
        run(toy_cfg(tmp_path / "cache", "method=quail", "method.hinge.distance=cosine"), tmp_path / "run")
    with pytest.raises(ConfigError, match="aggregate"):
        run(toy_cfg(tmp_path / "cache", "method=quail", "method.auto_margin.aggregate=mode"), tmp_path / "run")
    with pytest.raises(ConfigError, match="method.hinge.margin"):
        run(toy_cfg(tmp_path / "cache", "method=quail", "method.hinge.margin=-1"), tmp_path / "run")
    assert not (tmp_path / "cache").exists()


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """A toy target that learned its forget set (+experiment=toy_learns), and GA on it."""
    cache = tmp_path_factory.mktemp("learned_cache")

    def row(method):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=["+experiment=toy_learns", "device=cpu", "logger=none",
                                               f"paths.cache={cache}", f"method={method}", "quant=[none,rtn_int4]"])
        return run(cfg, tmp_path_factory.mktemp(method))

    return row("target"), row("ga")


def test_the_toy_target_learns_and_unlearning_removes_it(learned):
    target, ga = learned
    assert target.metric("none", "verbmem_f") >= 50 and target.metric("none", "knowmem_f") > 0
    # a flipped ascent sign or swapped forget/retain splits would not lower both
    assert ga.metric("none", "verbmem_f") < target.metric("none", "verbmem_f") / 2
    assert ga.metric("none", "knowmem_f") < target.metric("none", "knowmem_f")


def test_the_recovery_ratio_is_defined_and_follows_its_definition_on_a_learned_toy(learned):
    target, ga = learned
    full, quant, target_quant = (r.metric(q, "verbmem_f") for r, q in ((ga, "none"), (ga, "rtn_int4"),
                                                                       (target, "rtn_int4")))
    assert target_quant != full  # defined: the quantized target still knows what unlearning removed
    assert ga.recovery_of("rtn_int4", "verbmem_f") == pytest.approx((quant - full) / (target_quant - full))
    items = ga.recovery_items["rtn_int4"]["verbmem_f"]
    assert 100 * sum(items["target_quant"]) / len(items["target_quant"]) == pytest.approx(target_quant)
