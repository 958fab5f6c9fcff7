"""One run, start to end: check the config, then data -> target/retrain -> unlearn ->
quantize + evaluate -> recovery and analysis -> results.json, the tracker, the terminal.

The stages themselves are in stages.py; this file only calls them in order and puts
their values into a :class:`~quail_repro.results.Results`.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import transformers
from omegaconf import DictConfig, OmegaConf

from quail_repro import machine, numerics, stages
from quail_repro.build import make
from quail_repro.errors import QuailError
from quail_repro.eval.metrics import recovery_ratio
from quail_repro.eval.muse_eval import corpus_notes
from quail_repro.loggers import log_run, run_summary
from quail_repro.results import (CLASSIFICATION_RECOVERY_METRICS, RECOVERY_ITEMS, RECOVERY_METRICS, PrecisionMetrics,
                                 Results, format_table, write_json,
                                 write_results)
from quail_repro.validate import check_config, resolve_device

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: str | Path) -> Results:
    """Run every stage for one config; write results.json (+ generations) into run_dir.

    Any failure is on record in results.json before it is raised.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # our own tqdm bars show stage progress; transformers' per-load bars are noise here
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    results = Results(model=cfg.model.name, dataset=cfg.dataset.name, method=cfg.method.name, seed=cfg.seed)
    logger = make(cfg.logger)
    logger.start(OmegaConf.to_container(cfg, resolve=True), str(run_dir))
    history, generations, figures, cache = [], {}, {}, None
    try:
        # first: torch's kernel level and MKL's path are fixed by the process's first kernel
        numerics.apply(cfg.numerics, resolve_device(cfg.device))
        cfg, bad_quant = check_config(cfg)
        cache = numerics.open_cache(cfg)
        results.machine = {**machine.describe(), "numerics": cache.environment}
        data = stages.prepare_data(cfg, cache)
        results.notes = corpus_notes(data.corpus)  # metrics a corpus with absent parts cannot give
        for metric, note in results.notes.items():
            log.warning("%s: %s", metric, note)
        models = stages.prepare_models(cfg, data, cache)
        auc = results.privleak_auc_retrain = stages.reference_auc(cfg, data, models, cache)
        unlearned = stages.unlearn(cfg, data, models, cache)
        results.unlearning, history = unlearned.record, unlearned.history
        if unlearned.subject is None:
            results.status = unlearned.record.status
        else:
            evals = evaluate_all(cfg, unlearned.subject, list(cfg.quant), data, models, auc, cache, bad_quant,
                                 results)
            generations = {q: e.generations for q, e in evals.items()}
            write_generations(run_dir, generations)
            if history:  # an unlearned model: what did quantization give back, and why?
                # the target at each precision, where the unlearned model has both ends (full precision: did
                # unlearning remove anything?)
                precisions = list(evals) if "none" in evals else []
                target_evals = evaluate_all(cfg, models.target, precisions, data, models, auc, cache, bad_quant, None)
                keys = CLASSIFICATION_RECOVERY_METRICS if data.classification else RECOVERY_METRICS
                results.recovery, results.recovery_items = recovery(evals, target_evals, list(cfg.quant), keys)
                if cfg.analysis.enabled:
                    results.analysis, figures = analyse_all(cfg, unlearned.subject, data, models, cache, run_dir)
            results.status = "ok" if all(m.ok for m in results.metrics.values()) else "partial"
    except BaseException as err:  # a QuailError, a bug, an interrupt: on record, then raised
        results.status, results.error = "failed", f"{type(err).__name__}: {err}"
        results.provenance = cache.used if cache is not None else {}
        write_results(run_dir, results)
        logger.finish(run_summary(results))
        raise
    results.provenance = cache.used
    write_results(run_dir, results)
    log_run(logger, results, history, generations, figures)
    logger.finish(run_summary(results))
    print(format_table(results))
    return results


def evaluate_all(cfg, ref, precisions: list[str], data, models, auc, cache, bad_quant: dict[str, str],
                 results: Results | None) -> dict[str, stages.Evaluation]:
    """``ref`` at each of ``precisions``; a precision that cannot run is recorded as failed
    in ``results`` (when given) and the others still run."""
    out = {}
    for qname in precisions:
        qcfg = cfg.quant[qname]
        try:
            if qname in bad_quant:
                raise QuailError(bad_quant[qname])
            # utility only for the row's own model: the target's quantized MUSE metrics serve the recovery ratio
            out[qname] = stages.evaluate(cfg, ref, qcfg, data, models, auc, cache, with_utility=results is not None)
        except QuailError as err:  # e.g. a quantizer this device cannot run
            log.error("evaluation of %s at %s failed: %s", ref.key, qname, err)
            if results is not None:
                results.metrics[qname] = PrecisionMetrics(status="failed", error=str(err))
            continue
        if results is not None:
            results.metrics[qname] = PrecisionMetrics(**out[qname].metrics)
            results.quant[qname] = out[qname].quant
            if out[qname].utility:
                results.utility[qname] = out[qname].utility
    return out


def write_generations(run_dir: Path, generations: dict[str, dict]) -> None:
    (run_dir / "generations").mkdir(exist_ok=True)
    for qname, gens in generations.items():
        write_json(run_dir / "generations" / f"{qname}.json", gens)


def recovery(evals: dict, target_evals: dict, precisions: list[str],
             keys: tuple[str, ...] = RECOVERY_METRICS) -> tuple[dict, dict]:
    """Recovery ratio per quantized precision and metric (eval.metrics.recovery_ratio), None
    where undefined (no full-precision result of either model, a failed precision, nothing
    removed, a zero denominator), and the per-question scores it comes from (for bootstrap
    intervals)."""
    ratios, items = {}, {}
    full, target_full = evals.get("none"), target_evals.get("none")
    for q in precisions:
        if q == "none":
            continue
        mine, target = evals.get(q), target_evals.get(q)
        ratios[q] = dict.fromkeys(keys)
        if full is None or target_full is None or mine is None or target is None:
            continue
        items[q] = {}
        for k in keys:
            source, score = RECOVERY_ITEMS[k]
            rows = full.generations[source]
            ratios[q][k] = recovery_ratio(full.metrics[k], mine.metrics[k], target.metrics[k],
                                          target_full=target_full.metrics[k], one_item=100 / len(rows))
            items[q][k] = {name: [row[score] for row in e.generations[source]] for name, e in
                           (("full", full), ("quant", mine), ("target_quant", target), ("target_full", target_full))}
            # the source document of each item: the cluster bootstrap resamples a document's items together
            items[q][k]["groups"] = [row.get("source") if row.get("source") is not None else f"item{i}"
                                     for i, row in enumerate(rows)]
    return ratios, items


def analyse_all(cfg, subject, data, models, cache, run_dir: Path) -> tuple[dict, dict[str, Path]]:
    """Per-precision bucket analysis, and the two figures copied into the run folder."""
    out, analyses = {}, {}
    for qname, qcfg in cfg.quant.items():
        try:
            res = stages.analyse(cfg, subject, qcfg, data, models, cache)
        except QuailError as err:
            out[qname] = {"status": "failed", "error": str(err)}
            continue
        if res is None:
            continue
        out[qname], analyses[qname] = res.stats, res
    if not analyses:
        return out, {}
    figures = {}
    for name, cached in stages.analysis_figures(analyses, cache).items():
        figures[name] = run_dir / cached.name
        shutil.copyfile(cached, figures[name])
    return out, figures
