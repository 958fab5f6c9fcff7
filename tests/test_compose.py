"""compose_config composes the project's config outside a Hydra app and inside a running one."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from quail_repro import CONF_DIR
from quail_repro.compose import compose_config

ROOT = Path(__file__).resolve().parent.parent


def test_outside_an_app_it_composes_and_leaves_hydra_uninitialized():
    assert not GlobalHydra.instance().is_initialized()
    cfg = compose_config(["eval=muse", "seed=7"])
    assert cfg.eval.knowmem.trailing_space is True and cfg.eval.decoding.seed == 7
    assert "hydra" not in cfg
    assert not GlobalHydra.instance().is_initialized()


def test_with_hydra_initialized_on_the_project_tree_it_uses_that_loader():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        assert compose_config(["eval=muse"]).eval.knowmem.trailing_space is True
        assert GlobalHydra.instance().hydra is hydra  # not re-initialized


def test_with_hydra_initialized_on_another_tree_it_says_so(tmp_path):
    (tmp_path / "config.yaml").write_text("x: 1\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        with pytest.raises(RuntimeError, match="another config tree"):
            compose_config(["eval=muse"])


PROBE = textwrap.dedent("""
    import json
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.experimental.callback import Callback
    from quail_repro import CONF_DIR
    from quail_repro.compose import compose_config

    def probe(where):
        cfg = compose_config(["eval=muse", "seed=7"])
        print(json.dumps({"where": where, "trailing_space": cfg.eval.knowmem.trailing_space,
                          "seed": cfg.eval.decoding.seed}))

    class Probe(Callback):  # where the sweep table's comparability check runs
        def on_multirun_end(self, config, **kwargs):
            probe("callback")

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def main(cfg):
        probe("job")
        print(json.dumps({"where": "after", "mode": HydraConfig.get().mode.name,
                          "eval": cfg.eval.knowmem.trailing_space}))

    if __name__ == "__main__":
        main()
""")


def test_inside_a_running_app_a_job_and_a_callback_compose(tmp_path):
    (tmp_path / "probe_app.py").write_text(PROBE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    proc = subprocess.run([sys.executable, str(tmp_path / "probe_app.py"), "-m", "seed=1", "logger=none",
                           "~hydra.callbacks.table", "+hydra.callbacks.probe._target_=probe_app.Probe",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {d["where"]: d for d in map(json.loads, (x for x in proc.stdout.splitlines() if x.startswith("{")))}
    for where in ("job", "callback"):
        assert lines[where] == {"where": where, "trailing_space": True, "seed": 7}
    # the job's own config and Hydra state are untouched (eval=mini keeps its trailing_space false)
    assert lines["after"] == {"where": "after", "mode": "MULTIRUN", "eval": False}
