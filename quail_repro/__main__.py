"""Entry point: ``python -m quail_repro [+experiment=NAME] [group=option ...]``."""
from __future__ import annotations

import logging
import os
import sys

# Offline by default: nothing may block on a hub; set QUAIL_ONLINE=1 to reach it.
if os.environ.get("QUAIL_ONLINE") != "1":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from quail_repro import CONF_DIR
from quail_repro.errors import QuailError

log = logging.getLogger("quail_repro")


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from quail_repro.pipeline import run

    hc = HydraConfig.get()
    sweep = hc.mode.name == "MULTIRUN"
    try:
        run(cfg, hc.runtime.output_dir)  # records any failure in results.json before raising
    except QuailError as err:
        log.error("%s: %s", type(err).__name__, err)
        if not sweep:
            sys.exit(1)
    except Exception:
        if not sweep:
            raise
        # a sweep goes on: this job's failure is in its results.json and in the table
        log.exception("job %s failed", hc.job.num)


if __name__ == "__main__":
    main()
