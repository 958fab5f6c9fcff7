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
    try:
        run(cfg, hc.runtime.output_dir)
    except QuailError as err:
        log.error("%s: %s", type(err).__name__, err)
        if hc.mode.name != "MULTIRUN":  # a sweep records the failure and goes on
            sys.exit(1)


if __name__ == "__main__":
    main()
