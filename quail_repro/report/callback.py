"""The Hydra callback that keeps a sweep's table current (registered in conf/config.yaml)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from quail_repro.report.build import build
from quail_repro.report.tracker import log_to_tracker

log = logging.getLogger(__name__)


#: touched after each rebuild of a sweep's table during the sweep (the jobs run in several processes)
BUILT_MARK = ".table_built"


class TableCallback(Callback):
    """The table kept current after each job, and reported at the sweep's end.

    ``refresh_seconds``: after a job, the table is rebuilt unless another job rebuilt it less than
    this many seconds ago (a cached sweep finishes a job every ~0.5 s, and rebuilding after each was
    a quarter of its time); the end of the sweep always rebuilds it. 0: after every job.
    (A failing job's results.json is written by pipeline.run itself, whatever the error.)
    """

    def __init__(self, refresh_seconds: float) -> None:
        if not refresh_seconds >= 0:
            raise ValueError(f"hydra.callbacks.table.refresh_seconds={refresh_seconds!r}: must be >= 0")
        self.refresh_seconds = refresh_seconds

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        mode = OmegaConf.select(config, "hydra.mode")
        if getattr(mode, "name", mode) != "MULTIRUN":
            return
        mark = Path(config.hydra.sweep.dir) / BUILT_MARK  # keep the files current: a stopped sweep still has a table
        try:
            if mark.exists() and time.time() - mark.stat().st_mtime < self.refresh_seconds:
                return
            build(config.hydra.sweep.dir, figures=False)
            mark.touch()
        except Exception as e:  # never let the report break a job
            log.warning("could not update the sweep table: %s", e)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rep = build(sweep_dir)
        print(f"\n{rep.text}\nwritten: {', '.join(str(f) for f in rep.files)}")
        try:
            hint = log_to_tracker(rep, sweep_dir, config.logger)
        except Exception as e:  # the files are written; a tracker problem must not hide them
            log.error("could not log the table to the experiment tracker: %s", e)
            return
        if hint:
            print(hint)
