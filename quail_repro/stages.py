"""The stages: data -> target/retrain -> unlearn -> quantize + evaluate -> analyse.

Each stage is a function of the :class:`Run` (config, its components built once by the check,
cache, and what earlier stages made) that returns a value; its output is a cache entry keyed by everything that made it (cache.py), so a
sweep never recomputes a corpus, a model, an unlearned model or an evaluation it already has.
``run.cfg.device`` is the resolved device (validate.check_config sets it before any stage).
"""
from __future__ import annotations

import copy
import json
import logging
import shutil
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig

from quail_repro.analysis import analyse_buckets, dw_histogram, layer_names_for, logit_shifts, quantizer_codes
from quail_repro.losses import IGNORE_INDEX, logit_distance
from quail_repro.cache import Cache
from quail_repro.classification import CLASSIFICATION, encode, evaluate_classifier
from quail_repro.data.tweets import TweetCorpus
from quail_repro.data.muse import MuseCorpus, load_muse
from quail_repro.errors import ConfigError, Diverged, QuailError
from quail_repro.eval.muse_eval import evaluate_muse, privleak_auc_of
from quail_repro.eval.utility import enabled as utility_enabled, run_utility, write_corpus_tasks
from quail_repro.methods.quail import Quail
from quail_repro.models.base import ModelRef
from quail_repro.plotting import plot_dw_histogram, plot_overlap_per_layer
from quail_repro.quant.base import FullPrecision
from quail_repro.results import PrecisionMetrics, Results, Unlearning, write_json
from quail_repro.train import CAUSAL_LM, UnlearnConfig, pack_texts, unlearn as unlearn_loop, unlearning_blocks

if TYPE_CHECKING:  # the components are built by validate.py, which imports this module
    from quail_repro.validate import Components

log = logging.getLogger(__name__)
#: bump when the analysis gains or changes statistics, so cached analyses are redone
#: (2: update transfer and KL added; 3: where the update lives: frac_changed, |w| of the changed
#: weights, by_code and by_abs_w_decile; 4: the per-weight |dw|/Delta array saved as dw_in_steps.pt;
#: 5: a histogram of it instead, dw_hist.json, a few KB at any size; 6: update_l2, the update's norm)
ANALYSIS_VERSION = 6
#: bump when a change to the analysis figures' drawing code should redraw cached figures
FIGURES_VERSION = 2


@dataclass(frozen=True)
class Data:
    corpus: MuseCorpus | TweetCorpus  # a TweetCorpus: the classification task (classification.py)
    key: str  # identifies the corpus content in downstream cache keys
    auc_retrain: float | None  # PrivLeak's reference AUC when the dataset config fixes it

    @property
    def classification(self) -> bool:
        return isinstance(self.corpus, TweetCorpus)


@dataclass(frozen=True)
class Models:
    target: ModelRef
    retrain: ModelRef
    dtype: torch.dtype


@dataclass(frozen=True)
class Unlearned:
    subject: ModelRef | None  # the model to evaluate; None when unlearning diverged
    record: Unlearning
    history: list[dict]  # per-step loss parts


@dataclass(frozen=True)
class Evaluation:
    metrics: dict  # MUSE's metrics (quail_repro.eval.muse_eval.evaluate_muse)
    generations: dict  # per-item outputs and scores
    quant: dict  # the quantizer's settings (describe())
    utility: dict  # lm-eval task -> {metric: value} (eval.utility; empty when off)


@dataclass
class Run:
    """What a run's stages share: the checked config, its components (built once, validate.py), the
    cache, and what the earlier stages made."""
    cfg: DictConfig
    cache: Cache
    parts: Components
    data: Data | None = None
    models: Models | None = None
    auc_retrain: float | None = None  # PrivLeak's reference AUC (reference_auc)

    @classmethod
    def of(cls, cfg: DictConfig, cache: Cache, **made) -> "Run":
        """A Run with ``cfg``'s components built (validate.build_components), for callers that hold a
        config without the pipeline's check (tests, scripts)."""
        from quail_repro.validate import build_components  # validate imports this module

        return cls(cfg, cache, build_components(cfg), **made)


def load(ref: ModelRef, cfg: DictConfig, dtype: torch.dtype, quantizer=None):
    """A saved model (at a precision) and its tokenizer, ready for evaluation."""
    from transformers import AutoTokenizer  # here: its import is ~0.5 s of a cached job's start-up

    model = (quantizer or FullPrecision("none")).load(ref.path, dtype=dtype, device=cfg.device)
    return model.eval(), AutoTokenizer.from_pretrained(ref.tokenizer)


def _read(entry: Path, name: str):
    return json.loads((entry / name).read_text())


# -- data and models ----------------------------------------------------------------------


#: corpora already read in this process, by (source class, path, content key): the jobs of a sweep
#: that share a worker process read their corpus once (reading it is ~1 s, most of a cached job)
_CORPORA: dict[tuple[str, str, str], object] = {}


def prepare_data(run: Run) -> Data:
    source = run.parts.source
    path, key = source.prepare(run.cache)
    memo = (type(source).__qualname__, str(path), key)
    if memo not in _CORPORA:
        _CORPORA[memo] = getattr(source, "load", load_muse)(path)
    # a copy: no job can change what the next one reads
    return Data(copy.deepcopy(_CORPORA[memo]), key, source.privleak_auc_retrain)


def prepare_models(run: Run) -> Models:
    recipe = run.parts.recipe
    refs = recipe.prepare(run.data.corpus, run.data.key, run.cache, run.cfg.device)
    return Models(refs["target"], refs["retrain"], recipe.dtype)


def prepare(run: Run) -> Run:
    """The data, then the target and retrain models, into ``run`` (every later stage needs both)."""
    run.data = prepare_data(run)
    run.models = prepare_models(run)
    return run


def reference_auc(run: Run) -> float | None:
    """PrivLeak's reference AUC: a configured constant, or measured on our retrain model
    (None for the classification task, which has no PrivLeak)."""
    cfg, data, models, cache = run.cfg, run.data, run.models, run.cache
    if data.auc_retrain is not None:
        return float(data.auc_retrain)
    if data.classification:
        return None
    spec = {"retrain": models.retrain.key, "privleak": cfg.eval.privleak, "batch_size": cfg.eval.batch_size,
            "dtype": str(models.dtype)}

    def build(d: Path):
        model, tok = load(models.retrain, cfg, models.dtype)
        write_json(d / "auc.json", {"auc": privleak_auc_of(model, tok, data.corpus, cfg.eval)})

    return _read(cache.get_or_build("privleak_ref", spec, build), "auc.json")["auc"]


# -- unlearning ---------------------------------------------------------------------------


#: method.auto_margin.aggregate: how the per-weight steps become one margin
AUTO_MARGIN_REDUCERS = {"mean": torch.mean, "median": torch.median, "max": torch.max}


def half_step(model, quantizer, aggregate: str) -> float:
    """Half the quantization step Delta of ``quantizer`` on the model's quantized weights."""
    if aggregate not in AUTO_MARGIN_REDUCERS:
        raise ConfigError(f"method.auto_margin.aggregate={aggregate!r}: choose one of {sorted(AUTO_MARGIN_REDUCERS)}")
    state = model.state_dict()
    steps = torch.cat([quantizer_codes(quantizer, state[name].detach().float().cpu())[1].flatten()
                       for name in layer_names_for(model)])
    return 0.5 * AUTO_MARGIN_REDUCERS[aggregate](steps).item()


#: method.auto_margin.kind: what an auto margin measures
AUTO_MARGIN_KINDS = ("half_step", "quantizer_shift")


def quantizer_shift(model, quantizer, blocks, distance: str, batch_size: int, task) -> float:
    """How far the quantizer alone moves the model's logits on ``blocks``: the mean over their target
    tokens of distance(logits of the quantized model, logits of the model), in logit units."""
    from quail_repro.fakequant import FakeQuant

    fake = FakeQuant(quantizer, model)
    quantized = fake.view(model, frozen=fake.weights(model, straight_through=False))
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(blocks), batch_size):
            batch = task.batch(blocks[torch.arange(i, min(i + batch_size, len(blocks)))], model.device)
            ref, cur = task.outputs(model, batch), task.outputs(quantized, batch)
            mask = cur.targets != IGNORE_INDEX
            total += float((logit_distance(cur.logits, ref.logits, distance) * mask).sum())
            count += int(mask.sum())
    return total / max(count, 1)


def resolve_auto_margin(method, method_cfg: DictConfig, target_model, quantizer, measure_shift) -> float | None:
    """QUAIL's margin: an auto one measured now, scale x either half the step of ``quantizer`` on the
    target's weights aggregated over them (kind half_step), or the logit shift the quantizer itself
    causes on the target's forget tokens (kind quantizer_shift: ``measure_shift()``, cached); None for
    a method without a hinge."""
    if not isinstance(method, Quail):
        return None
    if method.margin is None:
        a = method_cfg.auto_margin
        if a.kind == "quantizer_shift":
            method.resolve_margin(a.scale * measure_shift())
        else:
            method.resolve_margin(a.scale * half_step(target_model, quantizer, a.aggregate))
    return method.margin


def _hinge_activity(history: list[dict]) -> dict:
    """How many steps the QUAIL hinge had a gradient on some forget token, and its mean value."""
    if not history or "hinge" not in history[0]:
        return {}
    return {"hinge_active_steps": sum(row["hinge_active"] > 0 for row in history),
            "hinge_mean": sum(row["hinge"] for row in history) / len(history)}


def unlearn(run: Run) -> Unlearned:
    """The model a row evaluates: the target or retrain model itself, or the target unlearned."""
    cfg, data, models, cache = run.cfg, run.data, run.models, run.cache
    m = cfg.method
    if m.loss is None:
        if m.name not in ("target", "retrain"):
            raise ConfigError(f"method={m.name!r} has no loss and names no model (target or retrain)")
        return Unlearned(getattr(models, m.name), Unlearning(), [])
    settings = UnlearnConfig.from_method(m)
    spec = {"target": models.target.key, "corpus": data.key, "method": m, "dtype": str(models.dtype)}
    # the precision the weights live in while unlearning (the model's own dtype for
    # "native"; fp32 otherwise, with bf16 rounding after each step when emulated)
    train_dtype = models.dtype if settings.param_dtype == "native" else torch.float32

    def build(d: Path):
        model, tok = load(models.target, cfg, train_dtype)
        method = run.parts.method
        blocks = _posts if data.classification else _blocks
        task = CLASSIFICATION if data.classification else CAUSAL_LM
        forget, retain = blocks(tok, data.corpus, m, (m.forget_split, True), (m.retain_split, method.uses_retain))

        def measure_shift() -> float:  # once per target, quantizer, distance and forget data
            q = run.parts.margin_quantizer
            shift_spec = {"target": models.target.key, "corpus": data.key, "quantizer": q.describe(),
                          "distance": m.hinge.distance, "forget": [m.forget_split, m.max_length, m.data_layout]}

            def build_shift(out: Path):
                value = quantizer_shift(model, q, forget, m.hinge.distance, m.batch_size, task)
                write_json(out / "margin.json", {"quantizer_shift": value})
            return _read(cache.get_or_build("margin", shift_spec, build_shift), "margin.json")["quantizer_shift"]

        margin = resolve_auto_margin(method, m, model, run.parts.margin_quantizer, measure_shift)
        reference = None  # the frozen original, loaded only for methods that compare with it (a 7B copy is 13.5 GB)
        if method.reference_on_forget or method.reference_on_retain:
            reference, _ = load(models.target, cfg, train_dtype)
            reference.requires_grad_(False)
        stop_split = m.early_stop.reference_split if m.early_stop is not None else None
        (stop_blocks,) = blocks(tok, data.corpus, m, (stop_split, stop_split is not None))
        extra = {} if margin is None else {"margin": margin}
        adapter = run.parts.adapter  # LoRA: the loss trains an adapter
        trained = adapter.attach(model) if adapter else model
        try:
            history = unlearn_loop(trained, reference, method, forget, retain, settings, desc=f"unlearn {m.name}",
                                   task=task, stop_blocks=stop_blocks)
        except Diverged as err:
            write_json(d / "status.json", {"status": "diverged", "step": err.step, "loss": err.loss,
                                           "reason": err.reason, **extra})
            return
        if adapter:  # merged: quantizers and evaluation load a plain model of the original architecture
            model = adapter.merge(trained)
        model.save_pretrained(d)
        tok.save_pretrained(d)
        write_json(d / "history.json", history)
        stopped = {} if settings.early_stop is None else {"stopped_early": bool(history and history[-1].get("stopped"))}
        write_json(d / "status.json", {"status": "ok", "steps": len(history), **stopped, **extra})

    entry = cache.get_or_build("unlearn", spec, build)
    status = _read(entry, "status.json")
    if status["status"] != "ok":
        return Unlearned(None, Unlearning(**status), [])
    history = _read(entry, "history.json")
    record = Unlearning(**status, **_hinge_activity(history))
    return Unlearned(ModelRef(path=str(entry), key=entry.name, tokenizer=str(entry)), record, history)


def _blocks(tok, corpus: MuseCorpus, m: DictConfig, *wanted: tuple[str, bool]):
    """Each (split, used) as token blocks of a causal LM, None where unused."""
    for split, use in wanted:
        if use and split not in corpus.raw:
            raise ConfigError(f"the method asks for raw split {split!r}; the corpus has {sorted(corpus.raw)}")
    return tuple(unlearning_blocks(tok, corpus.raw[split], m.max_length, m.data_layout) if use else None
                 for split, use in wanted)


def _posts(tok, corpus: TweetCorpus, m: DictConfig, *wanted: tuple[str, bool]):
    """Each (split, used) as classification.Examples, None where unused."""
    return tuple(encode(tok, corpus.split(split), m.max_length) if use else None for split, use in wanted)


# -- quantize + evaluate, analyse ---------------------------------------------------------


def evaluate(run: Run, ref: ModelRef, precision: str, with_utility: bool = True) -> Evaluation:
    """MUSE's metrics (the classification task's, classification.evaluate_classifier) of ``ref`` loaded
    at one precision of ``cfg.quant`` (raises QuailError if it cannot run)."""
    cfg, data, models, cache, auc_retrain = run.cfg, run.data, run.models, run.cache, run.auc_retrain
    quantizer = _quantizer(run, precision)
    if hasattr(quantizer, "use_corpus"):  # GPTQ/AWQ calibrate on the corpus's own text
        quantizer.use_corpus(data.corpus)
    loaded = []  # the model at this precision, loaded once for MUSE's metrics and lm-eval's utility

    def model_at_precision():
        if not loaded:
            loaded.append(load(ref, cfg, models.dtype, quantizer))
        return loaded[0]
    spec = {"model": ref.key, "corpus": data.key, "quant": quantizer.describe(),
            "eval": {k: v for k, v in cfg.eval.items() if k != "utility"},  # utility has its own entry
            "auc_retrain": auc_retrain, "dtype": str(models.dtype)}

    def build(d: Path):
        model, tok = model_at_precision()
        if data.classification:
            metrics, generations = evaluate_classifier(model, tok, data.corpus, cfg.eval)
        else:
            metrics, generations = evaluate_muse(model, tok, data.corpus, cfg.eval, auc_retrain=auc_retrain)
        write_json(d / "metrics.json", metrics)
        write_json(d / "generations.json", generations)

    entry = cache.get_or_build("eval", spec, build)
    scores = utility(run, ref, quantizer, model_at_precision) if with_utility else {}
    return Evaluation(_read(entry, "metrics.json"), _read(entry, "generations.json"), quantizer.describe(), scores)


def _quantizer(run: Run, precision: str):
    """The precision's quantizer, as built with the run's components (QuailError: it could not be)."""
    if precision in run.parts.bad_quant:
        raise QuailError(run.parts.bad_quant[precision])
    return run.parts.quantizers[precision]


def evaluate_all(run: Run, ref: ModelRef, precisions: list[str], with_utility: bool) -> dict[str, Evaluation | str]:
    """``ref`` at each of ``precisions``; a precision that cannot run (e.g. a quantizer this device
    cannot run) is its error message, and the others still run."""
    out = {}
    for qname in precisions:
        try:
            out[qname] = evaluate(run, ref, qname, with_utility)
        except QuailError as err:
            log.error("evaluation of %s at %s failed: %s", ref.key, qname, err)
            out[qname] = str(err)
    return out


def record(results: Results, evals: dict[str, Evaluation | str]) -> None:
    """Each precision's metrics, quantizer settings and utility into ``results``; a failed one as failed."""
    for qname, e in evals.items():
        if isinstance(e, str):
            results.metrics[qname] = PrecisionMetrics(status="failed", error=e)
            continue
        results.metrics[qname] = PrecisionMetrics(**e.metrics)
        results.quant[qname] = e.quant
        if e.utility:
            results.utility[qname] = e.utility


def utility(run: Run, ref: ModelRef, quantizer, model_at_precision) -> dict:
    """lm-eval's tasks (eval.utility) on ``ref`` at one precision, on the model already loaded
    for MUSE's metrics when there is one; {} when utility is off."""
    cfg, data, models, cache = run.cfg, run.data, run.models, run.cache
    u = cfg.eval.get("utility")
    if not utility_enabled(u):
        return {}
    spec = {"model": ref.key, "quant": quantizer.describe(), "utility": u, "dtype": str(models.dtype),
            "lm_eval": version("lm_eval")}
    if u.corpus_tasks:
        spec["corpus"] = data.key
        tasks = cache.get_or_build("utility_data", {"corpus": data.key, "data": u.data},
                                   lambda d: write_corpus_tasks(d, data.corpus, u.data), numeric=False)
    else:
        tasks = None

    def build(d: Path):
        model, tok = model_at_precision()
        write_json(d / "utility.json", run_utility(model, tok, u, tasks))

    return _read(cache.get_or_build("utility", spec, build), "utility.json")


@dataclass(frozen=True)
class Analysis:
    stats: dict  # bucket overlap, |dw| statistics, transfer, logit shifts (analysis.bucket_analysis)
    entry: Path  # the cache entry (its name is the key analysis_figures draws by)

    @property
    def dw_histogram(self) -> dict:
        """The histogram of each weight's |dw| / Delta (analysis.dw_histogram), for the figure."""
        return _read(self.entry, "dw_hist.json")


def analyse(run: Run, subject: ModelRef, precision: str) -> Analysis | None:
    """Bucket overlap, |dw| statistics and logit shifts of ``subject`` vs the target at one
    precision of ``cfg.quant``; None for a quantizer without codes (full precision)."""
    cfg, data, models, cache = run.cfg, run.data, run.models, run.cache
    quantizer = _quantizer(run, precision)
    if isinstance(quantizer, FullPrecision):
        return None
    if hasattr(quantizer, "use_corpus"):  # checked before two models are loaded for nothing
        raise ConfigError(f"{quantizer.name}: the bucket analysis has codes for RTN and bitsandbytes only")
    a = cfg.analysis
    spec = {"target": models.target.key, "subject": subject.key, "corpus": data.key,
            "quant": quantizer.describe(), "analysis": a, "dtype": str(models.dtype),
            "version": ANALYSIS_VERSION}

    def build(d: Path):
        t_model, tok = load(models.target, cfg, models.dtype)
        u_model, _ = load(subject, cfg, models.dtype)
        names = layer_names_for(t_model)
        t_state, u_state = t_model.state_dict(), u_model.state_dict()
        stats, ratios = analyse_buckets(t_state, u_state, names, quantizer, dtype=models.dtype)
        write_json(d / "dw_hist.json", dw_histogram(ratios))
        del ratios
        task = CLASSIFICATION if data.classification else CAUSAL_LM
        if data.classification:  # the forget posts, one scored position (the class logits) each
            blocks = encode(tok, data.corpus.split("forget"), a.max_length)
        else:
            blocks = pack_texts(tok, data.corpus.raw["forget"], a.max_length)[: a.max_blocks].to(cfg.device)
        kinds = (a.distance, "kl")
        full = logit_shifts(u_model, t_model, blocks, kinds, task=task)
        stats["logit_shift_full"], stats["kl_full"] = full[a.distance], full["kl"]
        del t_model, u_model
        qt, _ = load(models.target, cfg, models.dtype, quantizer)
        qu, _ = load(subject, cfg, models.dtype, quantizer)
        quant = logit_shifts(qu, qt, blocks, kinds, task=task)
        stats["logit_shift_quant"], stats["kl_quant"] = quant[a.distance], quant["kl"]
        stats["logit_distance"] = a.distance
        write_json(d / "analysis.json", stats)

    entry = cache.get_or_build("analysis", spec, build)
    return Analysis(_read(entry, "analysis.json"), entry)


def analysis_figures(analyses: dict[str, Analysis], cache: Cache) -> dict[str, Path]:
    """The two analysis figures over ``analyses`` ({precision: Analysis}): the |dw|/Delta
    histogram and the bucket overlap per layer. Cached by the analyses they draw, so a cached
    job reads them instead of drawing them again (drawing was ~1 s of a ~2 s cached job)."""
    spec = {"analyses": {q: a.entry.name for q, a in analyses.items()}, "version": FIGURES_VERSION}
    files = {"analysis/dw_over_step_hist": "dw_over_step_hist.png",
             "analysis/bucket_overlap_per_layer": "bucket_overlap_per_layer.png"}

    def build(d: Path):
        plot_dw_histogram({q: a.dw_histogram for q, a in analyses.items()}, d / files["analysis/dw_over_step_hist"])
        plot_overlap_per_layer({q: a.stats["per_layer"] for q, a in analyses.items()},
                               d / files["analysis/bucket_overlap_per_layer"])

    entry = cache.get_or_build("figures", spec, build)
    return {name: entry / f for name, f in files.items()}


def analyse_all(run: Run, subject: ModelRef, run_dir: Path) -> tuple[dict, dict[str, Path]]:
    """Per-precision bucket analysis (a precision whose analysis cannot run: its error), and the
    two figures copied into the run folder."""
    out, analyses = {}, {}
    for qname in run.cfg.quant:
        try:
            res = analyse(run, subject, qname)
        except QuailError as err:
            out[qname] = {"status": "failed", "error": str(err)}
            continue
        if res is not None:
            out[qname], analyses[qname] = res.stats, res
    figures = {}
    for name, cached in (analysis_figures(analyses, run.cache) if analyses else {}).items():
        figures[name] = run_dir / cached.name
        shutil.copyfile(cached, figures[name])
    return out, figures
