"""A sweep's table in the experiment tracker: one more run of the sweep's group (job_type report)."""
from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from quail_repro.loggers import sweep_group
from quail_repro.report.build import Report
from quail_repro.report.cells import Spread, fmt
from quail_repro.report.table import Table


def tracker_rows(table: Table) -> list[list]:
    """The table's rows with each cell over seeds as its text ("41.2 ± 3.0 (n=2, 1 failed)")."""
    return [[fmt(v, f) if isinstance(v, Spread) else v for v, f in zip(row, table.formats)] for row in table.rows]


def log_to_tracker(rep: Report, sweep_dir: str | Path, logger_cfg: DictConfig) -> str:
    """The assembled table as a W&B Table and the files as an artifact; returns where the run went."""
    group = logger_cfg.get("group") or sweep_group(rep.name, sweep_dir)
    logger = instantiate(logger_cfg, job_type="report", group=group, run_name=f"{rep.name}-table")
    logger.start({"report": rep.name, "sweep_dir": str(Path(sweep_dir).resolve()), "jobs": len(rep.jobs),
                  "finished": sum(j.results is not None for j in rep.jobs),
                  "hydra": {"mode": "MULTIRUN", "sweep_dir": str(sweep_dir)}}, str(sweep_dir))
    try:
        logger.log_table(rep.name, rep.table.headers, tracker_rows(rep.table))
        png = [f for f in rep.files if f.suffix == ".png"]
        if png:
            logger.log_images({f"{rep.name}/figure": png[0]})
        logger.log_artifact(group, "table", rep.files)
    except BaseException as err:  # the run closes as failed, not left open until the process exits
        logger.finish({"status": "failed", "error": f"{type(err).__name__}: {err}"})
        raise
    logger.finish({"status": "ok"})  # the same summary dict a job's run gets (loggers.run_summary)
    return logger.sync_hint()
