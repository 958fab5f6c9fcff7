"""A job's W&B run id comes from its config hash, so re-running a job continues its run."""
from pathlib import Path

import pytest
import wandb
from hydra import compose, initialize_config_dir

from quail_repro.build import from_config

CONF = Path(__file__).resolve().parent.parent / "conf"


@pytest.fixture(autouse=True)
def own_wandb_service():
    """Shut this process's W&B service down after each test: it leaves WANDB_SERVICE in the
    environment, and a W&B run started later in a subprocess (test_wandb's sweep) would attach to it."""
    yield
    wandb.teardown()


def run_ids(tmp_path, jobs):
    """Start and finish one offline W&B run per (config, group); the ids, read from the run folders."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["logger=wandb", "logger.mode=offline", f"logger.dir={tmp_path}",
                                           "logger.project=quail_test"])
    ids = []
    for config, group in jobs:
        logger = from_config(cfg.logger, group=group)
        logger.start(config, str(tmp_path / "run"))
        ids.append(logger.run.id)
        logger.finish({"status": "ok"})
    folders = sorted(p.name.rsplit("-", 1)[1] for p in (tmp_path / "wandb").glob("offline-run-*"))
    assert folders == sorted(ids)
    return ids


def test_a_rerun_job_continues_its_run_and_other_jobs_get_their_own(tmp_path):
    a, b = {"method": {"name": "ga"}, "seed": 0}, {"method": {"name": "ga"}, "seed": 1}
    first, again, other, elsewhere = run_ids(tmp_path, [(a, "table2-x"), (a, "table2-x"), (b, "table2-x"),
                                                        (a, "table2-y")])
    assert first == again
    assert len({first, other, elsewhere}) == 3  # another config, or the same config in another sweep


def test_a_run_id_in_config_is_used_as_given(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["logger=wandb", "logger.run_id=my-run-1", "logger.mode=disabled"])
    assert cfg.logger.resume == "allow"
    logger = from_config(cfg.logger)
    logger.start({"seed": 0}, str(tmp_path))
    assert logger.run.id == "my-run-1"
    logger.finish({"status": "ok"})


def test_a_finished_offline_run_is_announced_to_wandb_osh(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["logger=wandb", "logger.mode=offline", f"logger.dir={tmp_path}",
                                           f"logger.osh_command_dir={tmp_path / 'osh'}"])
    logger = from_config(cfg.logger)
    logger.start({"seed": 0}, str(tmp_path / "run"))
    run_id = logger.run.id
    logger.finish({"status": "ok"})
    (command,) = (tmp_path / "osh").glob("*.command")  # what wandb-osh on the login node reads
    folder = Path(command.read_text())
    assert folder.parent == (tmp_path / "wandb").resolve() and folder.name.endswith(run_id)
    assert list(folder.glob("*.wandb"))
