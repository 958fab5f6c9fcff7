"""The numeric environment: every numeric stage's cache key carries it (device kind, torch's kernel
level, MKL's path, threads, GPU, CUDA, torch version), data stages' keys do not; portable mode gives
the same bits under every emulated machine and fast mode does not (numerics.py)."""
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from quail_repro import machine, numerics, stages
from quail_repro.build import from_config
from quail_repro.cache import Cache
from quail_repro.errors import ConfigError

CONF = Path(__file__).resolve().parent.parent / "conf"
ROOT = CONF.parent
NUMERIC_FREE = {"corpus", "tweets", "tokenizer"}


def compose_cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    with open_dict(cfg):
        cfg.device = "cpu"
    return cfg


class KeyRecorder(Cache):
    """Records every key a stage asks for and builds nothing (a stage that then reads its entry stops)."""

    def get_or_build(self, stage, spec, build, numeric=True):
        self.keys[stage] = self.key(stage, spec, numeric)
        return self.path(stage, spec, numeric)


class Posts:  # what the classifier recipe reads of a corpus
    labels = ["reliable", "misinformation"]

    def split(self, name):
        return [{"text": "a post", "label": 0}]


def stage_keys(environment: dict, tmp_path) -> dict[str, str]:
    """The key of every stage of the language-model path (base stage on) and of the classifier."""
    cache = KeyRecorder(tmp_path, environment=environment)
    cache.keys = {}
    lm = compose_cfg("+experiment=toy", "model.base.enabled=true")
    from_config(lm.dataset).prepare(cache)  # the corpus's key (read back it would need building)
    # the tiny model's recipe needs the corpus's texts only to train, which the recorder never does
    texts = type("Texts", (), {"raw": {s: [] for s in ("forget", "retain1", "retain2", "holdout")}})()
    r = stages.Run.of(lm, cache, auc_retrain=0.5, data=stages.Data(corpus=texts, key="corpus-key", auc_retrain=None))
    r.models = stages.prepare_models(r)
    for call in (lambda: stages.reference_auc(r),
                 lambda: stages.unlearn(r),
                 lambda: stages.evaluate(r, r.models.target, "rtn_int4"),
                 lambda: stages.analyse(r, r.models.retrain, "rtn_int4")):
        with contextlib.suppress(FileNotFoundError):  # the stage reads the entry it did not build
            call()
    cls = compose_cfg("+experiment=classification")
    from_config(cls.dataset).prepare(cache)
    from_config(cls.model).prepare(Posts(), "posts-key", cache, "cpu")
    return cache.keys


BASE_ENV = {"device_kind": "cpu", "torch": "2.13.0", "deterministic": False, "cpu_vendor": "GenuineIntel",
            "cpu_capability": "AVX512",
            "threads": 2, "blas": {"mkl": "oneMKL 2024.2", "branch": "OFF"}, "fingerprint": "0" * 16}


@pytest.mark.parametrize("change", [
    {"device_kind": "cuda"}, {"cpu_vendor": "AuthenticAMD"}, {"cpu_capability": "AVX2"}, {"blas": {"mkl": "oneMKL 2024.2", "branch": "COMPATIBLE"}},
    {"threads": 1}, {"torch": "2.14.0"}, {"gpu": "NVIDIA H100"}, {"cuda": "12.8"}, {"fingerprint": "1" * 16}])
def test_every_numeric_stage_key_changes_with_the_numeric_environment(tmp_path, change):
    a, b = stage_keys(BASE_ENV, tmp_path), stage_keys(BASE_ENV | change, tmp_path)
    assert set(a) >= {"corpus", "tweets", "tokenizer", "base", "target", "retrain", "privleak_ref", "unlearn",
                      "eval", "analysis", "classifier_target", "classifier_retrain"}
    assert {s for s in a if a[s] != b[s]} == set(a) - NUMERIC_FREE
    assert stage_keys(BASE_ENV, tmp_path) == a  # and nothing else moves them


def test_the_environment_reports_what_changes_bits(monkeypatch):
    n = compose_cfg().numerics
    env = numerics.environment(n, "cpu")
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["cpu_vendor"] == machine.cpu_vendor() != ""
    monkeypatch.setattr(machine, "cpu_vendor", lambda: "AuthenticAMD")
    assert numerics.environment(n, "cpu")["cpu_vendor"] == "AuthenticAMD"
    assert env["threads"] == torch.get_num_threads() and env["torch"] == torch.__version__
    if torch.backends.mkl.is_available():
        assert env["blas"]["branch"] == numerics.mkl_branch() and "Math Kernel Library" in env["blas"]["mkl"]
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert numerics.environment(n, "cpu")["cpu_capability"] == "AVX2"
    # on a GPU: its model, CUDA's and cuDNN's versions (read without one: the calls are stubbed)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91000)
    monkeypatch.setattr(numerics, "fingerprint", lambda device: "f" * 16)
    gpu = numerics.environment(n, "cuda:0")
    assert (gpu["device_kind"], gpu["gpu"], gpu["cuda"], gpu["cudnn"]) == ("cuda", "NVIDIA H100 80GB HBM3", "12.8",
                                                                           91000)
    assert numerics.environment(n, "cuda:1") == gpu  # another card of the same model computes the same bits
    shared = OmegaConf.merge(n, {"cache_scope": "shared"})
    assert numerics.environment(shared, "cuda:0") == {"device_kind": "cuda", "scope": "shared"}


def test_bad_numerics_settings_are_config_errors():
    n = compose_cfg().numerics
    for change, named in (({"cpu_capability": "avx9"}, "cpu_capability"), ({"blas_path": "FAST"}, "blas_path"),
                          ({"threads": 0}, "threads"), ({"cache_scope": "cluster"}, "cache_scope")):
        with pytest.raises(ConfigError, match=named):
            numerics.apply(OmegaConf.merge(n, change), "cpu")


def test_a_kernel_level_this_process_can_no_longer_take_is_a_clear_error():
    other = "avx2" if torch.backends.cpu.get_cpu_capability() != "AVX2" else "default"
    n = OmegaConf.merge(compose_cfg().numerics, {"cpu_capability": other})
    env_before = os.environ.get("ATEN_CPU_CAPABILITY")
    try:
        with pytest.raises(numerics.NumericsError, match="fixed at the first kernel"):
            numerics.apply(n, "cpu")
    finally:
        if env_before is None:
            os.environ.pop("ATEN_CPU_CAPABILITY", None)
        else:
            os.environ["ATEN_CPU_CAPABILITY"] = env_before


#: emulated machines: torch's kernel level, MKL's path and the thread count, as another CPU would set them
MACHINES = [{"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AUTO", "OMP_NUM_THREADS": "2"},
            {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "1"},
            {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AUTO", "OMP_NUM_THREADS": "1"}]
PROBE = """
import sys, torch
from hydra import compose, initialize_config_dir
from quail_repro import numerics
with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
    n = compose("config", overrides=["numerics=" + sys.argv[2]]).numerics
numerics.apply(n, "cpu")
print(numerics.fingerprint("cpu"))
"""


def fingerprints(mode: str) -> list[str]:
    out = []
    for m in MACHINES:
        env = {k: v for k, v in os.environ.items() if k not in m} | m
        out.append(subprocess.run([sys.executable, "-c", PROBE, str(CONF), mode], env=env, check=True,
                                  capture_output=True, text=True).stdout.strip())
    return out


def test_portable_mode_gives_the_same_bits_on_every_emulated_machine_and_fast_mode_does_not():
    if not torch.backends.mkl.is_available():
        pytest.skip("portable mode pins MKL's path; this torch has no MKL")
    assert len(set(fingerprints("portable"))) == 1
    assert len(set(fingerprints("fast"))) == len(MACHINES)  # so the check above could fail


@pytest.mark.slow
@pytest.mark.parametrize("mode,identical", [("portable", True), ("fast", False)])
def test_the_toy_job_gives_identical_metrics_in_portable_mode_only(tmp_path, mode, identical):
    """The whole pipeline (target, unlearning, three precisions) per emulated machine."""
    metrics = []
    for i, m in enumerate(MACHINES):
        env = {k: v for k, v in os.environ.items() if k not in m} | m | {"WANDB_MODE": "disabled"}
        run = tmp_path / f"run{i}"
        subprocess.run([sys.executable, "-m", "quail_repro", "+experiment=toy_learns", f"numerics={mode}",
                        "logger=none", f"paths.cache={tmp_path / f'cache{i}'}", f"hydra.run.dir={run}"],
                       env=env, check=True, capture_output=True, cwd=ROOT)
        metrics.append(json.loads((run / "results.json").read_text())["metrics"])
    assert all(m == metrics[0] for m in metrics) == identical
