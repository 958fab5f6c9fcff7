"""Where a run's config, per-stage metrics and results go besides results.json.

``logger=none`` uses NullLogger; ``logger=wandb`` (the default) WandbLogger. Both have the
same calls: start, log_metrics, log_table, log_images, log_artifact, finish. ``finish`` takes
the run's summary as a plain dict with a ``status`` (a job's from ``run_summary(results)``;
the sweep report's its own), so any caller hands it over the same way.

Metric names are ``STAGE/PRECISION/NAME`` (``eval/bnb_nf4/knowmem_f``,
``analysis/rtn_int4/bucket_overlap``) or ``STAGE/NAME`` (``unlearn/total``): W&B puts
panels in sections by the first segment (or by all segments, a workspace setting).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from quail_repro.errors import ConfigError
from quail_repro.cache import config_hash
from quail_repro.results import CLASSIFICATION_FIELDS, MUSE_FIELDS, Results

log = logging.getLogger(__name__)

#: per metric (or classification split): the item fields shown as input, reference, output and score
GENERATION_FIELDS = {"verbmem_f": ("prompt", "gt", "output", "rougeL"),
                     "knowmem_f": ("question", "answer", "output", "rougeL"),
                     "knowmem_r": ("question", "answer", "output", "rougeL"),
                     **{split: ("text", "label", "pred", "correct") for split in ("forget", "retain", "test", "poison")}}
# the last column is the score: ROUGE-L, or for a classifier 1.0 / 0.0 (prediction correct)
GENERATION_COLUMNS = ["precision", "metric", "item", "input", "reference", "output", "rougeL"]


def generation_rows(generations: dict[str, dict]) -> list[list]:
    """One row per generated item ({precision: generations.json}) for a table of generations.

    PrivLeak has scores, not generations, and is left out.
    """
    rows = []
    for precision, per_metric in generations.items():
        for metric, (question, reference, output, score) in GENERATION_FIELDS.items():
            for i, item in enumerate(per_metric.get(metric, [])):
                rows.append([precision, metric, i, item.get(question), item.get(reference),
                             item.get(output), item.get(score)])
    return rows


def log_run(logger, results: Results, history: list[dict], generations: dict[str, dict],
            figures: dict[str, Path]) -> None:
    """Everything a finished (or failed) run has, as the tracker's metrics, tables and images.

    Names are read from the results schema: ``eval/PRECISION/METRIC``, ``recovery/...``,
    ``analysis/...`` and the unlearning curve as ``unlearn/PART`` per step.
    """
    for row in history:
        logger.log_metrics({f"unlearn/{k}": v for k, v in row.items() if k != "step"}, step=row["step"])
    for q, m in results.metrics.items():
        if m.ok:
            logger.log_metrics({f"eval/{q}/{k}": m.get(k) for k in (*MUSE_FIELDS, *CLASSIFICATION_FIELDS)
                                if m.get(k) is not None})
    if generations:
        logger.log_table("generations", GENERATION_COLUMNS, generation_rows(generations))
    for q, ratios in results.recovery.items():
        logger.log_metrics({f"recovery/{q}/{k}": v for k, v in ratios.items() if v is not None})
    for q, stats in results.analysis.items():
        logger.log_metrics({f"analysis/{q}/{k}": v for k, v in stats.items()})
    for q, tasks in results.utility.items():  # eval.utility's lm-eval scores
        logger.log_metrics({f"utility/{q}/{t}/{k}": v for t, scores in tasks.items() for k, v in scores.items()})
    logger.log_images(figures)


def run_summary(results: Results) -> dict[str, Any]:
    """A job's summary for ``finish``: its status, and its error, unlearning record, PrivLeak
    reference AUC and machine where it has them."""
    d = results.to_dict()
    return {"status": results.status,
            **{k: d[k] for k in ("error", "unlearning", "privleak_auc_retrain", "machine") if d.get(k) is not None}}


def checked_summary(summary: Mapping[str, Any]) -> Mapping[str, Any]:
    """``summary`` if it is what ``finish`` takes (a dict with a string ``status``), else a
    TypeError: every logger checks it, so a wrong call fails under logger=none too."""
    if not isinstance(summary, Mapping) or not isinstance(summary.get("status"), str):
        raise TypeError(f"finish takes the run's summary as a dict with a 'status' (a job's: run_summary(results)), "
                        f"got {type(summary).__name__} {summary!r:.200}")
    return summary


def sweep_group(experiment: str | None, sweep_dir: str | Path) -> str:
    """The W&B group of every run of one sweep: the experiment and the sweep folder's name."""
    return f"{experiment or 'sweep'}-{Path(sweep_dir).name}"


def _hydra_context() -> dict[str, Any]:
    """Sweep folder, job number, overrides and choices of the current Hydra job (empty outside one)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    return {"mode": hc.mode.name, "sweep_dir": hc.sweep.dir, "job_num": hc.job.get("num"),
            "overrides": list(hc.overrides.task),
            "choices": OmegaConf.to_container(hc.runtime.choices, resolve=True)}


class NullLogger:
    """No experiment tracker: results.json, the run folder and the printed table only."""

    def __init__(self, **run_settings: Any):
        # takes (and ignores) a tracker's per-run settings (group, job_type, run_name), so
        # callers such as the sweep report need not know which logger is configured
        pass

    def start(self, config: dict[str, Any], run_dir: str) -> None:
        pass

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        pass

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        pass

    def log_images(self, images: dict[str, str | Path]) -> None:
        pass

    def log_artifact(self, name: str, type: str, paths: list[str | Path]) -> None:
        pass

    def finish(self, summary: Mapping[str, Any]) -> None:
        checked_summary(summary)

    def sync_hint(self) -> str:
        return ""


#: logger.save_requirements: which W&B runs list the installed packages
REQUIREMENTS = ("per_run", "per_sweep")


class WandbLogger(NullLogger):
    """One W&B run per job (see conf/logger/wandb.yaml).

    ``group=None``: in a sweep, ``<experiment>-<sweep folder>`` (sweep_group), so the runs of
    one sweep share a group; a single run has no group.
    """

    def __init__(self, *, project: str, entity: str | None, mode: str, group: str | None, job_type: str | None,
                 run_name: str | None, tags: list[str], dir: str | None, run_id: str | None, resume: str,
                 osh_command_dir: str | None, save_requirements: str):
        if save_requirements not in REQUIREMENTS:
            raise ConfigError(f"logger.save_requirements={save_requirements!r}: choose one of {list(REQUIREMENTS)}")
        self.settings = dict(project=project, entity=entity, mode=mode, group=group, job_type=job_type,
                             name=run_name, tags=list(tags or []), dir=dir, resume=resume)
        self.save_requirements = save_requirements
        self.run_id = run_id
        self.osh_command_dir = osh_command_dir
        self.run = None

    def start(self, config: dict[str, Any], run_dir: str) -> None:
        import wandb

        s = dict(self.settings)
        hydra = _hydra_context()
        if s["group"] is None and hydra.get("mode") == "MULTIRUN":
            report = config.get("report")
            s["group"] = sweep_group(report.get("name") if isinstance(report, dict) else None, hydra["sweep_dir"])
        s["name"] = s["name"] or Path(run_dir).name
        # one W&B run per job: the id hashes the job's config with its group and job type, so a
        # re-run (a resumed sweep, a cached job run again) continues its run instead of adding one
        s["id"] = self.run_id or config_hash({"group": s["group"], "job_type": s["job_type"], "config": config})
        if s["dir"]:
            Path(s["dir"]).mkdir(parents=True, exist_ok=True)
        # the composed config as the job ran it, plus where Hydra put it (filterable in the UI)
        config = {"hydra": hydra, **config, "run_dir": str(Path(run_dir).resolve())}
        # W&B lists every installed package (~0.2 s a run); a sweep's jobs share one environment, so
        # with per_sweep only the sweep's table run (job_type report) and single runs list them
        sweep_job = hydra.get("mode") == "MULTIRUN" and s["job_type"] != "report"
        requirements = self.save_requirements == "per_run" or not sweep_job
        # jobs of a basic-launcher sweep share one process: close any run a crashed job left open
        self.run = wandb.init(config=config, reinit="finish_previous",
                              settings=wandb.Settings(x_save_requirements=requirements), **s)

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if scalars:  # commit now: a later call without a step gets the next step, not this one
            self.run.log(scalars, step=step, commit=True)

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        import wandb

        self.run.log({key: wandb.Table(columns=columns, data=rows, allow_mixed_types=True)})

    def log_images(self, images: dict[str, str | Path]) -> None:
        import wandb

        present = {k: wandb.Image(str(p)) for k, p in images.items() if Path(p).exists()}
        if present:
            self.run.log(present)

    def log_artifact(self, name: str, type: str, paths: list[str | Path]) -> None:
        import wandb

        artifact = wandb.Artifact(name, type=type)
        for p in paths:
            if Path(p).exists():
                artifact.add_file(str(p))
        self.run.log_artifact(artifact)

    def finish(self, summary: Mapping[str, Any]) -> None:
        """Close the run with ``summary`` (see ``checked_summary``) in its W&B summary; a
        ``failed`` status is exit code 1."""
        checked_summary(summary)
        if self.run is None:
            return
        for key, value in summary.items():
            if value is not None:
                self.run.summary[key] = value
        run_folder = Path(self.run.dir).parent  # run.dir is the run's files/ subfolder
        self.run.finish(exit_code=1 if summary["status"] == "failed" else 0)
        self.run = None
        if self.osh_command_dir and self.settings["mode"] == "offline":
            # tell wandb-osh (running where there is a network) that this finished run can be synced
            from wandb_osh.hooks import TriggerWandbSyncHook

            TriggerWandbSyncHook(Path(self.osh_command_dir).expanduser())(run_folder)

    def sync_hint(self) -> str:
        """Where the runs went, and how offline runs are uploaded later."""
        mode, where = self.settings["mode"], self.settings["dir"] or os.environ.get("WANDB_DIR", ".")
        if mode in ("offline", "dryrun"):
            return f"W&B runs are offline under {Path(where) / 'wandb'}; upload them with `wandb sync {Path(where) / 'wandb'}/offline-run-*`"
        return f"W&B mode: {mode}"


