"""One run, start to end: check the config, then the stages (stages.py) in order: data ->
target/retrain -> unlearn -> quantize + evaluate -> recovery and analysis; then results.json,
the tracker and the terminal. Only calls; every value goes into a Results."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import transformers
from omegaconf import DictConfig, OmegaConf

from quail_repro import machine, numerics, stages
from quail_repro.build import from_config
from quail_repro.eval.muse_eval import corpus_notes
from quail_repro.loggers import log_run, run_summary
from quail_repro.recovery import row_recovery
from quail_repro.results import (CLASSIFICATION_RECOVERY_METRICS, RECOVERY_METRICS, Results, claim_run_dir,
                                 format_table, write_generations, write_results)
from quail_repro.validate import check_config, resolve_device

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: str | Path) -> Results:
    """Run every stage for one config; write results.json (+ generations) into run_dir.

    Any failure is on record in results.json before it is raised.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    owner = claim_run_dir(run_dir)
    # our own tqdm bars show stage progress; transformers' per-load bars are noise here
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    results = Results(model=cfg.model.name, dataset=cfg.dataset.name, method=cfg.method.name, seed=cfg.seed)
    logger = from_config(cfg.logger)
    logger.start(OmegaConf.to_container(cfg, resolve=True), str(run_dir))
    history, generations, figures, r = [], {}, {}, None
    started = time.perf_counter()
    try:
        # first: torch's kernel level and MKL's path are fixed by the process's first kernel
        numerics.apply(cfg.numerics, resolve_device(cfg.device))
        cfg, parts = check_config(cfg)  # every component built once (the check), then the stages use them
        r = stages.Run(cfg, numerics.open_cache(cfg), parts)
        results.machine = {**machine.describe(), "numerics": r.cache.environment}
        stages.prepare(r)
        results.notes = corpus_notes(r.data.corpus)  # metrics a corpus with absent parts cannot give
        for metric, note in results.notes.items():
            log.warning("%s: %s", metric, note)
        results.privleak_auc_retrain = r.auc_retrain = stages.reference_auc(r)
        unlearned = stages.unlearn(r)
        results.unlearning, history = unlearned.record, unlearned.history
        if unlearned.subject is not None:
            evals = stages.evaluate_all(r, unlearned.subject, list(cfg.quant), with_utility=True)
            stages.record(results, evals)
            done = {q: e for q, e in evals.items() if not isinstance(e, str)}  # a failed precision: its error
            write_generations(run_dir, generations := {q: e.generations for q, e in done.items()}, owner)
            if history:  # an unlearned model: what did quantization give back, and why?
                # the target where the unlearned model has both ends (full precision: did unlearning remove anything?)
                target = stages.evaluate_all(r, r.models.target, list(done) if "none" in done else [], False)
                keys = CLASSIFICATION_RECOVERY_METRICS if r.data.classification else RECOVERY_METRICS
                results.recovery, results.recovery_items = row_recovery(done, target, list(cfg.quant), keys)
                if cfg.analysis.enabled:
                    results.analysis, figures = stages.analyse_all(r, unlearned.subject, run_dir)
        results.status = unlearned.record.status if unlearned.subject is None else \
            "ok" if all(m.ok for m in results.metrics.values()) else "partial"
    except BaseException as err:  # a QuailError, a bug, an interrupt: on record, then raised
        results.status, results.error = "failed", f"{type(err).__name__}: {err}"
        results.provenance = r.cache.used if r is not None else {}
        results.wall_seconds = round(time.perf_counter() - started, 2)
        write_results(run_dir, results, owner)
        logger.finish(run_summary(results))
        raise
    results.provenance = r.cache.used
    results.wall_seconds = round(time.perf_counter() - started, 2)
    write_results(run_dir, results, owner)
    log_run(logger, results, history, generations, figures)
    logger.finish(run_summary(results))
    print(format_table(results))
    return results
