"""Check the composed config before any stage runs, so a bad value fails in seconds.

Every component is built once from its config into the run's Components (constructors validate
their arguments and raise ConfigError naming the option; the stages then use these objects and
build nothing again), the optimisation settings go through the dataclasses the stages use, and the
device is resolved. Nothing is trained or loaded.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from quail_repro.build import from_config
from quail_repro.classification import check_classification_eval
from quail_repro.data.tweets import TweetSource
from quail_repro.errors import ConfigError, QuailError
from quail_repro.eval.muse_eval import check_eval_config
from quail_repro.stages import AUTO_MARGIN_KINDS, AUTO_MARGIN_REDUCERS
from quail_repro.train import DATA_LAYOUTS, UnlearnConfig

log = logging.getLogger(__name__)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available on this machine")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"device={name!r}: choose auto, cpu or cuda[:N]")
    return name


def build_method(m: DictConfig) -> tuple[object | None, object | None, object | None]:
    """(method, LoRA adapter, auto-margin quantizer) built from ``cfg.method``: the forget loss with
    what its config composes over it (retain term, SURE's saliency, QUAIL's hinge, whose auto margin
    the unlearning stage measures on the target). All None for the target and retrain rows."""
    if m.loss is None:
        return None, None, None
    UnlearnConfig.from_method(m)
    if m.data_layout not in DATA_LAYOUTS:
        raise ConfigError(f"method.data_layout={m.data_layout!r}: choose one of {list(DATA_LAYOUTS)}")
    method = from_config(m.loss)
    if m.get("retain") is not None:  # KLR checks its reduction
        method = from_config(m.retain, forget=method)
    if m.get("saliency") is not None:  # SURE checks its percentile
        method = from_config(m.saliency, base=method)
    adapter = from_config(m.lora) if m.get("lora") is not None else None  # LoRA checks rank, alpha, modules
    looks_through = m.get("fake_quant") is not None or (m.get("hinge") is not None and m.hinge.space == "quantized")
    if adapter is not None and looks_through:
        raise ConfigError("a forward through the quantizer (method.fake_quant, method.hinge.space=quantized) "
                          "quantizes the base weights, not a LoRA adapter's update: drop one of the two")
    if m.get("fake_quant") is not None:  # its quantizer node is built with it
        method = from_config(m.fake_quant, base=method)
    if m.get("hinge") is None:
        return method, adapter, None
    quantizer = None
    if m.hinge.margin == "auto" or m.hinge.space == "quantized":
        a = m.auto_margin
        if a.kind not in AUTO_MARGIN_KINDS:
            raise ConfigError(f"method.auto_margin.kind={a.kind!r}: choose one of {list(AUTO_MARGIN_KINDS)}")
        if a.aggregate not in AUTO_MARGIN_REDUCERS:
            raise ConfigError(f"method.auto_margin.aggregate={a.aggregate!r}: "
                              f"choose one of {sorted(AUTO_MARGIN_REDUCERS)}")
        node = a.get("quantizer")
        if not isinstance(node, DictConfig) or "_target_" not in node:  # e.g. a bare name
            raise ConfigError(f"quantizer {node!r} not found: method.auto_margin.quantizer is a "
                              "conf/quant config, chosen with quant@method.auto_margin.quantizer=NAME")
        quantizer = from_config(node)
    # Quail checks distance, margin and space
    method = from_config(m.hinge, base=method, quantizer=quantizer if m.hinge.space == "quantized" else None)
    return method, adapter, quantizer if m.hinge.margin == "auto" else None


@dataclass
class Components:
    """The run's components, each built once from its config node (building is the check: every
    constructor raises a ConfigError naming its option). The stages use these, never the nodes."""
    source: object  # cfg.dataset: prepares and loads the corpus
    recipe: object  # cfg.model: trains or points at target and retrain
    method: object | None  # cfg.method, composed (None: the target / retrain rows)
    adapter: object | None  # cfg.method.lora
    margin_quantizer: object | None  # cfg.method.auto_margin.quantizer, for an auto margin
    quantizers: dict[str, object]  # cfg.quant, the precisions whose quantizer could be built
    bad_quant: dict[str, str]  # the others: precision -> why (recorded as failed; the rest still run)


def build_components(cfg: DictConfig) -> Components:
    """Every component of ``cfg``, built once; a quantizer that cannot be built is recorded in
    ``bad_quant`` rather than raised."""
    method, adapter, margin_quantizer = build_method(cfg.method)
    quantizers, bad_quant = {}, {}
    for name, node in cfg.quant.items():
        try:
            quantizers[name] = from_config(node)
        except QuailError as err:
            log.error("precision %s cannot be built and will be recorded as failed: %s", name, err)
            bad_quant[name] = str(err)
    return Components(from_config(cfg.dataset), from_config(cfg.model), method, adapter, margin_quantizer,
                      quantizers, bad_quant)


def _check_task(cfg: DictConfig, classification: bool, model) -> None:
    """The classification task (dataset=mini_tweets | tweets_csv | tweets_hub) needs a classifier
    and eval=classification; a MUSE corpus needs a language model and MUSE's eval."""
    from quail_repro.models.classifier import SequenceClassifier

    if classification != isinstance(model, SequenceClassifier) or classification != (cfg.eval.task ==
                                                                                     "classification"):
        need = "model=minilm_cls (or another classifier) and eval=classification" if classification else \
            "a language model (model=tiny_llama ...) and a MUSE eval (eval=mini | muse)"
        raise ConfigError(f"dataset={cfg.dataset.name} needs {need}; got model={cfg.model.name}, eval task "
                          f"{cfg.eval.task!r} (+experiment=classification sets all three)")


def check_config(cfg: DictConfig) -> tuple[DictConfig, Components]:
    """The config resolved, with ``device`` resolved, and its components built once
    (build_components; a precision whose quantizer cannot be built is in ``bad_quant``).

    Raises ConfigError (or another QuailError) for anything else that is wrong.
    """
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # a resolved copy: the stages' truth
    with open_dict(cfg):
        cfg.device = resolve_device(cfg.device)
    parts = build_components(cfg)
    classification = isinstance(parts.source, TweetSource)
    _check_task(cfg, classification, parts.recipe)
    (check_classification_eval if classification else check_eval_config)(cfg.eval)
    return cfg, parts
