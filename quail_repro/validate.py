"""Check the composed config before any stage runs, so a bad value fails in seconds.

Every component is built once from its config (constructors validate their arguments
and raise ConfigError naming the option), the optimisation settings go through the
dataclasses the stages use, and the device is resolved. Nothing is trained or loaded.
"""
from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from quail_repro.build import make
from quail_repro.classify import check_classify_eval
from quail_repro.data.tweets import TweetSource
from quail_repro.errors import ConfigError, QuailError
from quail_repro.eval.muse_eval import check_eval_config
from quail_repro.stages import AUTO_MARGIN_REDUCERS
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


def _check_method(m: DictConfig) -> None:
    if m.loss is None:
        return
    UnlearnConfig.from_method(m)
    if m.data_layout not in DATA_LAYOUTS:
        raise ConfigError(f"method.data_layout={m.data_layout!r}: choose one of {list(DATA_LAYOUTS)}")
    base = make(m.loss)
    if m.get("saliency") is not None:  # SURE checks its percentile
        base = make(m.saliency, base=base)
    if m.get("lora") is not None:  # LoRA checks rank, alpha, dropout and target modules
        make(m.lora)
    hinge = m.get("hinge")
    if hinge is None:
        return
    auto = hinge.margin == "auto"
    make(hinge, base=base, margin=0.0 if auto else hinge.margin)  # Quail checks distance and margin
    if not auto:
        return
    if m.auto_margin.aggregate not in AUTO_MARGIN_REDUCERS:
        raise ConfigError(f"method.auto_margin.aggregate={m.auto_margin.aggregate!r}: "
                          f"choose one of {sorted(AUTO_MARGIN_REDUCERS)}")
    quantizer = m.auto_margin.get("quantizer")
    if not isinstance(quantizer, DictConfig) or "_target_" not in quantizer:  # e.g. a bare name
        raise ConfigError(f"quantizer {quantizer!r} not found: method.auto_margin.quantizer is a "
                          "conf/quant config, chosen with quant@method.auto_margin.quantizer=NAME")
    make(quantizer)


def _check_task(cfg: DictConfig, classification: bool, model) -> None:
    """The classification task (dataset=mini_tweets | tweets_csv | tweets_hub) needs a classifier
    and eval=classify; a MUSE corpus needs a language model and MUSE's eval."""
    from quail_repro.models.classifier import SequenceClassifier

    if classification != isinstance(model, SequenceClassifier) or classification != (cfg.eval.get("task") ==
                                                                                     "classification"):
        need = "model=minilm_cls (or another classifier) and eval=classify" if classification else \
            "a language model (model=tiny_llama ...) and a MUSE eval (eval=mini | muse)"
        raise ConfigError(f"dataset={cfg.dataset.name} needs {need}; got model={cfg.model.name}, eval task "
                          f"{cfg.eval.get('task', 'muse')!r} (+experiment=tweets sets all three)")


def check_config(cfg: DictConfig) -> tuple[DictConfig, dict[str, str]]:
    """The config with ``device`` resolved, and {precision: error} for quantizers that
    cannot be built (those precisions are recorded as failed; the others still run).

    Raises ConfigError (or another QuailError) for anything else that is wrong.
    """
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # a resolved copy: the stages' truth
    with open_dict(cfg):
        cfg.device = resolve_device(cfg.device)
    classification = isinstance(make(cfg.dataset), TweetSource)
    model = make(cfg.model)
    _check_task(cfg, classification, model)
    _check_method(cfg.method)
    (check_classify_eval if classification else check_eval_config)(cfg.eval)
    bad_quant = {}
    for name, node in cfg.quant.items():
        try:
            make(node)
        except QuailError as err:
            log.error("precision %s cannot be built and will be recorded as failed: %s", name, err)
            bad_quant[name] = str(err)
    return cfg, bad_quant
