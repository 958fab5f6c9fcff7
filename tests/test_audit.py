"""python -m quail_repro.audit on two embedded toy checkpoints (a target that learned its few facts and
its GA_GDR-unlearned model) and the toy corpus as a MUSE-layout folder: the report, and the exit
status by threshold."""
import json
import shutil

import pytest
from hydra import compose, initialize_config_dir

from quail_repro import CONF_DIR, stages
from quail_repro.audit import main
from quail_repro.build import from_config
from quail_repro.cache import Cache
from quail_repro.compose import compose_config
from quail_repro.validate import check_config

#: the toy_learns experiment's evaluation settings (+experiment=toy_learns also sets the generator of
#: the embedded corpus, which a muse_dir dataset has not)
TOY_EVAL = ["eval.batch_size=8", "eval.verbmem.max_new_tokens=8", "eval.verbmem.gt_max_tokens=8",
            "eval.knowmem.max_new_tokens=4", "eval.knowmem.n_icl=2", "eval.privleak.max_length=64",
            "analysis.max_length=128", "analysis.max_blocks=4", "device=cpu"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(original folder, unlearned folder, corpus folder, cache) built by the pipeline's stages."""
    cache_dir = tmp_path_factory.mktemp("cache")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        # a target that knows its facts: a recovery ratio is defined only where unlearning removed an item
        cfg = compose("config", overrides=["+experiment=toy_learns", "device=cpu", f"paths.cache={cache_dir}",
                                           "method=ga_gdr"])
    cfg, _ = check_config(cfg)
    cache = Cache(str(cache_dir))
    corpus_dir, _ = from_config(cfg.dataset).prepare(cache)
    r = stages.prepare(stages.Run.of(cfg, cache))
    models, unlearned = r.models, stages.unlearn(r).subject
    original = tmp_path_factory.mktemp("original")  # a checkpoint as published: weights and tokenizer
    shutil.copytree(models.target.path, original, dirs_exist_ok=True)
    shutil.copytree(models.target.tokenizer, original, dirs_exist_ok=True)
    return str(original), unlearned.path, corpus_dir, str(cache_dir)


def _audit(pair, out, *flags):
    original, unlearned, corpus, cache = pair
    code = main(["--original", original, "--unlearned", unlearned, "--data", corpus, "--quant", "rtn_int4,gguf_q4_0",
                 "--out", str(out), *flags, f"paths.cache={cache}", *TOY_EVAL])
    return code, json.loads((out / "audit.json").read_text()), (out / "audit.md").read_text()


def test_the_report_and_the_exit_status_follow_the_threshold(pair, tmp_path, capsys):
    code, report, md = _audit(pair, tmp_path / "lenient", "--max-recovery", "1e9")
    assert code == 0 and report["verdict"] == "pass"
    assert list(report["precisions"]) == ["none", "rtn_int4", "gguf_q4_0"]
    for q in ("rtn_int4", "gguf_q4_0"):
        row = report["precisions"][q]
        for role in ("original", "unlearned"):
            assert 0 <= row[role]["knowmem_f"] <= 100 and 0 <= row[role]["verbmem_f"] <= 100
        assert 0 < row["bucket_overlap"] < 1 and row["transfer_coef"] is not None
        assert set(row["recovery"]) == {"knowmem_f", "verbmem_f"}
    assert report["privleak_auc_retrain"] is None  # no --retrain, and a local folder has no published AUC
    assert report["precisions"]["none"]["original"]["privleak"] is None
    assert "| gguf_q4_0 " in md and "verdict: pass" in md and "verdict: pass" in capsys.readouterr().out
    ratios = [r for row in list(report["precisions"].values())[1:] for r in row["recovery"].values()
              if r is not None]
    assert ratios, "no recovery ratio is defined on this pair: the exit-1 half below would not be tested"
    code, strict, _ = _audit(pair, tmp_path / "strict", "--max-recovery", str(max(ratios) - 0.01))
    assert code == 1 and strict["verdict"] == "fail"
    assert any(row.get("exceeds") for row in strict["precisions"].values())
    assert strict["precisions"]["gguf_q4_0"]["recovery"] == report["precisions"]["gguf_q4_0"]["recovery"]


def test_bad_input_exits_2_naming_it(pair, tmp_path, capsys):
    original, _, corpus, cache = pair
    assert main(["--original", original, "--unlearned", str(tmp_path), "--data", corpus,
                 f"paths.cache={cache}", "device=cpu", "--out", str(tmp_path / "o")]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["--original", original, "--unlearned", original, "--data", "no_such_dataset"]) == 2
    assert "no_such_dataset" in capsys.readouterr().err


def test_the_audit_config_composes_with_its_defaults():
    cfg = compose_config(["+audit=default"])
    assert list(cfg.quant) == ["none", "rtn_int8", "bnb_nf4", "gguf_q4_0"]
    assert cfg.audit.max_recovery == 0.2 and list(cfg.audit.gate) == ["knowmem_f", "verbmem_f"]
    assert cfg.method.name == "target"
