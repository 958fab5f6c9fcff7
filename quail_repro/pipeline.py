"""The stages: data -> target/retrain -> unlearn -> quantize -> evaluate -> report.

Each stage's output is a cache entry keyed by the config that made it (cache.py),
so a sweep never recomputes a corpus, a target, an unlearned model or an
evaluation it already has.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import transformers
from hydra.errors import InstantiationException
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig, OmegaConf
from transformers import AutoTokenizer

from quail_repro import CONF_DIR
from quail_repro.analysis import (bucket_analysis, dw_over_step, layer_names_for, logit_shifts,
                                  plot_dw_histogram, plot_overlap_per_layer, quantizer_codes)
from quail_repro.cache import Cache
from quail_repro.data.muse import load_muse
from quail_repro.errors import ConfigError, Diverged, QuailError
from quail_repro.eval.muse_eval import evaluate_muse, privleak_auc_of
from quail_repro.loggers import GENERATION_COLUMNS, generation_rows
from quail_repro.models.base import ModelRef
from quail_repro.quant.base import FullPrecision
from quail_repro.train import pack_texts, unlearn

log = logging.getLogger(__name__)
METRICS = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak")
#: bump when the analysis gains or changes statistics, so cached analyses are redone
#: (2: update transfer and KL added)
ANALYSIS_VERSION = 2


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available on this machine")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"device={name!r}: choose auto, cpu or cuda[:N]")
    return name


def make(node: DictConfig):
    """hydra instantiate, re-raising the harness's own errors instead of Hydra's wrapper."""
    return make_with(node)


def make_with(node: DictConfig, **kwargs):
    """``make`` with run-time arguments (objects or resolved values) added."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, QuailError):
            raise err.__cause__ from None
        raise


def load_quant_config(name: str) -> DictConfig:
    """A conf/quant option by name, for settings that refer to a quantizer (auto margin)."""
    path = CONF_DIR / "quant" / f"{name}.yaml"
    if not path.exists():
        options = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"quantizer {name!r} not found in {path.parent}; choose one of {options}")
    return OmegaConf.load(path)


def half_step(model, quantizer, aggregate: str) -> float:
    """Half the quantization step Delta of ``quantizer`` on the model's quantized weights."""
    reducers = {"mean": torch.mean, "median": torch.median, "max": torch.max}
    if aggregate not in reducers:
        raise ConfigError(f"method.auto_margin.aggregate={aggregate!r}: choose one of {sorted(reducers)}")
    state = model.state_dict()
    steps = torch.cat([quantizer_codes(quantizer, state[name].detach().float().cpu())[1].flatten()
                       for name in layer_names_for(model)])
    return 0.5 * reducers[aggregate](steps).item()


def _json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


class Pipeline:
    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.cache = Cache(to_absolute_path(cfg.paths.cache))
        self.dtype = None

    # -- stages -----------------------------------------------------------------
    def data(self):
        source = make(self.cfg.dataset)
        path, self.corpus_key = source.prepare(self.cache)
        self.auc_retrain_const = source.privleak_auc_retrain
        self.corpus = load_muse(path)
        return self.corpus

    def models(self) -> dict[str, ModelRef]:
        recipe = make(self.cfg.model)
        self.dtype = recipe.dtype
        self.refs = recipe.prepare(self.corpus, self.corpus_key, self.cache, self.device)
        return self.refs

    def load(self, ref: ModelRef, quantizer=None, dtype: torch.dtype | None = None):
        quantizer = quantizer or FullPrecision()
        model = quantizer.load(ref.path, dtype=dtype or self.dtype, device=self.device)
        return model.eval(), AutoTokenizer.from_pretrained(ref.tokenizer)

    def auc_retrain(self) -> float:
        """PrivLeak's reference AUC: a configured constant, or measured on our retrain model."""
        if self.auc_retrain_const is not None:
            return float(self.auc_retrain_const)
        spec = {"retrain": self.refs["retrain"].key, "privleak": self.cfg.eval.privleak,
                "batch_size": self.cfg.eval.batch_size}

        def build(d: Path):
            model, tok = self.load(self.refs["retrain"])
            _json(d / "auc.json", {"auc": privleak_auc_of(model, tok, self.corpus, self.cfg.eval)})

        return json.loads((self.cache.get_or_build("privleak_ref", spec, build) / "auc.json").read_text())["auc"]

    def unlearned(self) -> tuple[ModelRef | None, dict]:
        """The model to evaluate, and the unlearning status ({'status': 'ok'|'diverged', ...})."""
        m = self.cfg.method
        if m.loss is None:
            if m.name not in self.refs:
                raise ConfigError(f"method={m.name!r} has no loss and names no model (target or retrain)")
            return self.refs[m.name], {"status": "ok"}
        target = self.refs["target"]
        spec = {"target": target.key, "corpus": self.corpus_key, "method": m, "device_kind": self.device.split(":")[0]}

        # the precision the weights live in while unlearning (the model's own dtype for
        # "native"; fp32 otherwise, with bf16 rounding after each step when emulated)
        train_dtype = self.dtype if m.param_dtype == "native" else torch.float32

        def build(d: Path):
            model, tok = self.load(target, dtype=train_dtype)
            method, extra = self.method(model)
            reference, _ = self.load(target, dtype=train_dtype)
            reference.requires_grad_(False)
            forget = pack_texts(tok, self.corpus.raw[m.forget_split], m.max_length)
            retain = pack_texts(tok, self.corpus.raw[m.retain_split], m.max_length) if method.uses_retain else None
            try:
                history = unlearn(model, reference, method, forget, retain, lr=m.lr, epochs=m.epochs,
                                  batch_size=m.batch_size, max_steps=m.max_steps, seed=m.seed,
                                  weight_decay=m.weight_decay, grad_clip=m.grad_clip,
                                  max_abs_loss=m.max_abs_loss, param_dtype=m.param_dtype,
                                  desc=f"unlearn {m.name}")
            except Diverged as err:
                _json(d / "status.json", {"status": "diverged", "step": err.step, "loss": err.loss,
                                          "reason": err.reason, **extra})
                return
            model.save_pretrained(d)
            tok.save_pretrained(d)
            _json(d / "history.json", history)
            _json(d / "status.json", {"status": "ok", "steps": len(history), **extra})

        entry = self.cache.get_or_build("unlearn", spec, build)
        status = json.loads((entry / "status.json").read_text())
        if status["status"] != "ok":
            return None, status
        return ModelRef(path=str(entry), key=entry.name, tokenizer=str(entry)), status

    def method(self, target_model):
        """The configured loss; with a ``hinge`` node, wrapped in QUAIL's hinge.

        Returns the method and what was resolved at run time (the auto margin).
        """
        m = self.cfg.method
        base = make(m.loss)
        if m.get("hinge") is None:
            return base, {}
        margin = m.hinge.margin
        if margin == "auto":
            a = m.auto_margin
            quantizer = make(load_quant_config(a.quantizer))
            margin = a.scale * half_step(target_model, quantizer, a.aggregate)
        return make_with(m.hinge, base=base, margin=float(margin)), {"margin": float(margin)}

    def analyse(self, subject: ModelRef, quant_cfg: DictConfig) -> dict | None:
        """Bucket overlap, |dw| statistics and logit shifts of subject vs the target at one precision.

        None for quantizers without codes (full precision). Cached like the evaluation.
        """
        quantizer = make(quant_cfg)
        if isinstance(quantizer, FullPrecision):
            return None
        a = self.cfg.analysis
        target = self.refs["target"]
        spec = {"target": target.key, "subject": subject.key, "corpus": self.corpus_key,
                "quant": quantizer.describe(), "analysis": a, "dtype": str(self.dtype),
                "device_kind": self.device.split(":")[0], "version": ANALYSIS_VERSION}

        def build(d: Path):
            t_model, tok = self.load(target)
            u_model, _ = self.load(subject)
            names = layer_names_for(t_model)
            t_state, u_state = t_model.state_dict(), u_model.state_dict()
            stats = bucket_analysis(t_state, u_state, names, quantizer, dtype=self.dtype)
            torch.save(dw_over_step(t_state, u_state, names, quantizer, dtype=self.dtype), d / "dw_over_step.pt")
            blocks = pack_texts(tok, self.corpus.raw["forget"], a.max_length)[: a.max_blocks].to(self.device)
            kinds = (a.distance, "kl")
            full = logit_shifts(u_model, t_model, blocks, kinds)
            stats["logit_shift_full"], stats["kl_full"] = full[a.distance], full["kl"]
            del t_model, u_model
            qt, _ = self.load(target, quantizer)
            qu, _ = self.load(subject, quantizer)
            quant = logit_shifts(qu, qt, blocks, kinds)
            stats["logit_shift_quant"], stats["kl_quant"] = quant[a.distance], quant["kl"]
            stats["logit_distance"] = a.distance
            _json(d / "analysis.json", stats)

        entry = self.cache.get_or_build("analysis", spec, build)
        return {"stats": json.loads((entry / "analysis.json").read_text()),
                "dw_over_step": torch.load(entry / "dw_over_step.pt")}

    def evaluate(self, ref: ModelRef, quant_cfg: DictConfig, auc_retrain: float) -> dict:
        quantizer = make(quant_cfg)
        spec = {"model": ref.key, "corpus": self.corpus_key, "quant": quantizer.describe(),
                "eval": self.cfg.eval, "auc_retrain": auc_retrain, "dtype": str(self.dtype),
                "device_kind": self.device.split(":")[0]}

        def build(d: Path):
            model, tok = self.load(ref, quantizer)
            metrics, generations = evaluate_muse(model, tok, self.corpus, self.cfg.eval, auc_retrain=auc_retrain)
            _json(d / "metrics.json", metrics)
            _json(d / "generations.json", generations)

        entry = self.cache.get_or_build("eval", spec, build)
        return {"metrics": json.loads((entry / "metrics.json").read_text()), "entry": entry,
                "quant": quantizer.describe()}


def run(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Run every stage for one config and write results.json (+ generations) into run_dir."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # our own tqdm bars show stage progress; transformers' per-load bars are noise here
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    logger = make(cfg.logger)
    logger.start(OmegaConf.to_container(cfg, resolve=True), str(run_dir))
    results = {"model": cfg.model.name, "dataset": cfg.dataset.name, "method": cfg.method.name,
               "seed": cfg.seed, "status": "running", "metrics": {}, "quant": {}}
    try:
        p = Pipeline(cfg)
        p.data()
        p.models()
        auc_retrain = p.auc_retrain()
        results["privleak_auc_retrain"] = auc_retrain
        subject, status = p.unlearned()
        results["unlearning"] = status
        if subject is not None and (Path(subject.path) / "history.json").exists():
            for row in json.loads((Path(subject.path) / "history.json").read_text()):
                logger.log_metrics({f"unlearn/{k}": v for k, v in row.items() if k != "step"}, step=row["step"])
        if subject is None:
            results["status"] = status["status"]
        else:
            results["status"] = "ok"
            gen_dir = run_dir / "generations"
            gen_dir.mkdir(exist_ok=True)
            generations = {}
            for qname, qcfg in cfg.quant.items():
                try:
                    out = p.evaluate(subject, qcfg, auc_retrain)
                except QuailError as err:  # e.g. a quantizer this device cannot run
                    log.error("evaluation at %s failed: %s", qname, err)
                    results["metrics"][qname] = {"status": "failed", "error": str(err)}
                    results["status"] = "partial"
                    continue
                results["metrics"][qname] = {k: out["metrics"].get(k) for k in METRICS}
                results["metrics"][qname]["privleak_auc"] = out["metrics"].get("privleak_auc")
                results["quant"][qname] = out["quant"]
                (gen_dir / f"{qname}.json").write_text((out["entry"] / "generations.json").read_text())
                generations[qname] = json.loads((out["entry"] / "generations.json").read_text())
                logger.log_metrics({f"eval/{qname}/{k}": v for k, v in results["metrics"][qname].items()})
            logger.log_table("generations", GENERATION_COLUMNS, generation_rows(generations))
            if status.get("steps"):  # an unlearned model: how much did quantization give back?
                results["recovery"] = recovery(p, results["metrics"], cfg, auc_retrain)
                logger.log_metrics({f"recovery/{q}/{k}": v for q, r in results["recovery"].items()
                                    for k, v in r.items() if v is not None})
            if status.get("steps") and cfg.analysis.enabled:  # an unlearned model: compare it to its target
                results["analysis"] = analyse_all(p, subject, cfg, run_dir)
                for qname, stats in results["analysis"].items():
                    logger.log_metrics({f"analysis/{qname}/{k}": v for k, v in stats.items()})
                logger.log_images({f"analysis/{fig}": run_dir / f"{fig}.png"
                                   for fig in ("dw_over_step_hist", "bucket_overlap_per_layer")})
    except BaseException as err:  # a QuailError, a bug, an interrupt: on record, then raised
        results["status"] = "failed"
        results["error"] = f"{type(err).__name__}: {err}"
        write_results(run_dir, results)
        logger.finish(results)
        raise
    write_results(run_dir, results)
    logger.finish(results)
    print(format_table(results))
    return results


def analyse_all(p: Pipeline, subject: ModelRef, cfg: DictConfig, run_dir: Path) -> dict:
    """Per-precision bucket analysis into results, with the two figures in the run folder."""
    out, ratios, per_layer = {}, {}, {}
    for qname, qcfg in cfg.quant.items():
        try:
            res = p.analyse(subject, qcfg)
        except QuailError as err:
            out[qname] = {"status": "failed", "error": str(err)}
            continue
        if res is None:
            continue
        out[qname] = {k: v for k, v in res["stats"].items() if k != "per_layer"}
        out[qname]["per_layer"] = res["stats"]["per_layer"]
        ratios[qname], per_layer[qname] = res["dw_over_step"], res["stats"]["per_layer"]
    if ratios:
        plot_dw_histogram(ratios, run_dir / "dw_over_step_hist.png")
        plot_overlap_per_layer(per_layer, run_dir / "bucket_overlap_per_layer.png")
    return out


RECOVERY_METRICS = ("knowmem_f", "verbmem_f")


def recovery(p: Pipeline, metrics: dict, cfg: DictConfig, auc_retrain: float) -> dict:
    """Recovery ratio per quantized precision and metric:
    (unlearned at q - unlearned at full) / (target at q - unlearned at full).

    1 = quantization gave back everything that unlearning removed (as far as the quantized
    target itself keeps it), 0 = nothing, negative = quantization removed more. None where
    undefined: no full-precision result, a failed precision, or a zero denominator. The
    target's evaluations are cache entries shared with the target row of any table.
    """
    full = metrics.get("none")
    out = {}
    for qname, qcfg in cfg.quant.items():
        if qname == "none":
            continue
        mine = metrics.get(qname, {})
        target = None
        if full and "status" not in full and "status" not in mine:
            try:
                target = p.evaluate(p.refs["target"], qcfg, auc_retrain)["metrics"]
            except QuailError as err:
                log.error("recovery at %s: the target's evaluation failed: %s", qname, err)
        out[qname] = {}
        for k in RECOVERY_METRICS:
            gap = target[k] - full[k] if target else 0.0
            out[qname][k] = (mine[k] - full[k]) / gap if target and gap != 0 else None
    return out


def write_results(run_dir: Path, results: dict) -> Path:
    """results.json, unless that would replace a finished run's results with a failure."""
    path = run_dir / "results.json"
    if path.exists() and results["status"] != "ok":
        previous = json.loads(path.read_text())
        if previous.get("status") == "ok":
            path = run_dir / "results.failed.json"
            log.warning("keeping the finished results.json; this run's outcome goes to %s", path)
    _json(path, results)
    return path


def format_table(results: dict) -> str:
    head = f"{results['method']} on {results['dataset']} ({results['model']}): {results['status']}"
    rows = [head, f"{'precision':<12}" + "".join(f"{m:>11}" for m in METRICS)]
    for qname, m in results["metrics"].items():
        if m.get("status") == "failed":
            rows.append(f"{qname:<12} failed: {m['error']}")
            continue
        rows.append(f"{qname:<12}" + "".join(f"{m[k]:>11.1f}" if m[k] is not None else f"{'n/a':>11}"
                                            for k in METRICS))
    if results.get("recovery"):
        rows.append("KnowMem-f recovery ratio: " + ", ".join(
            f"{q} {'undefined' if r['knowmem_f'] is None else format(r['knowmem_f'], '.2f')}"
            for q, r in results["recovery"].items()))
    return "\n".join(rows)
