"""dataset=muse_dir: a local MUSE-layout folder (here, the embedded corpus written to disk). Absent
verbmem/knowmem/privleak parts skip their metrics with a note, never a zero; broken files are named."""
import json
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from quail_repro.data.mini_corpus import write_mini_corpus
from quail_repro.errors import ConfigError, DataError
from quail_repro.pipeline import run

CONF = Path(__file__).resolve().parent.parent / "conf"


def cfg(cache, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=["+experiment=toy", "device=cpu", "logger=none", f"paths.cache={cache}",
                                            "method=target", "quant=[none]", *overrides])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The toy corpus in MUSE's layout, as a user's folder."""
    out = tmp_path_factory.mktemp("my_muse") / "corpus"
    write_mini_corpus(out, **cfg("unused").dataset.generator)
    return out


@pytest.fixture(scope="module")
def full_run(folder, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    return tmp / "cache", run(cfg(tmp / "cache", "dataset=muse_dir", f"dataset.path={folder}", "~dataset.generator"),
                              tmp / "run").to_dict()


def copy_without(folder: Path, dest: Path, *parts: str) -> Path:
    shutil.copytree(folder, dest)
    for part in parts:
        (dest / part).unlink()
    return dest


def test_a_complete_folder_gives_every_metric(full_run):
    _, res = full_run
    assert res["status"] == "ok" and res["dataset"] == "muse_dir" and "notes" not in res
    assert all(res["metrics"]["none"][k] is not None for k in ("verbmem_f", "knowmem_f", "knowmem_r", "privleak"))


def test_absent_parts_skip_their_metrics_with_a_note_and_a_warning(folder, full_run, tmp_path, caplog):
    partial = copy_without(folder, tmp_path / "partial", "verbmem/forget.jsonl", "privleak/holdout.jsonl",
                           "knowmem/retain_qa_icl.jsonl")
    res = run(cfg(tmp_path / "cache", "dataset=muse_dir", f"dataset.path={partial}", "~dataset.generator"),
              tmp_path / "run").to_dict()
    m = res["metrics"]["none"]
    assert res["status"] == "ok"
    assert m["verbmem_f"] is None and m["privleak"] is None and m["privleak_auc"] is None  # not 0
    assert m["knowmem_f"] == full_run[1]["metrics"]["none"]["knowmem_f"]  # what is there is unchanged
    assert set(res["notes"]) == {"verbmem_f", "privleak", "knowmem_r"}
    assert res["notes"]["verbmem_f"].startswith("skipped") and "verbmem/forget" in res["notes"]["verbmem_f"]
    assert "privleak/holdout" in res["notes"]["privleak"]
    assert res["notes"]["knowmem_r"].startswith("asked without in-context examples")
    assert json.loads((tmp_path / "run" / "results.json").read_text())["notes"] == res["notes"]
    assert "verbmem/forget is absent" in caplog.text


def test_raw_is_required(folder, tmp_path):
    partial = copy_without(folder, tmp_path / "no_raw", "raw/retain1.jsonl")
    with pytest.raises(DataError, match="retain1.jsonl"):
        run(cfg(tmp_path / "cache", "dataset=muse_dir", f"dataset.path={partial}", "~dataset.generator"),
            tmp_path / "run")


def test_a_malformed_file_is_named_with_its_line(folder, tmp_path):
    bad = copy_without(folder, tmp_path / "bad")
    path = bad / "knowmem" / "forget_qa.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = '{"question": "Who?", "answer": 3}'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"forget_qa\.jsonl.*line 3"):
        run(cfg(tmp_path / "cache", "dataset=muse_dir", f"dataset.path={bad}", "~dataset.generator"), tmp_path / "run")


def test_without_a_path_it_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="dataset.path"):
        run(cfg(tmp_path / "cache", "dataset=muse_dir", "~dataset.generator"), tmp_path / "run")
