"""The classification task: posts as model inputs, one aligned position per post, fine-tuning
and the metrics (accuracy, macro-F1, loss-based membership inference).

A classifier's outputs become ``Outputs(logits[:, None, :], labels[:, None])``: one position
per post whose "token" is the class. The unlearning methods' math (losses.py: mean NLL,
sequence log-prob, KL, the hinge) then applies unchanged: GA ascends the cross-entropy,
NPO uses log p(label), KLR compares class distributions, QUAIL's hinge the class logits.
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from quail_repro import losses
from quail_repro.errors import ConfigError
from quail_repro.methods.base import Outputs
from quail_repro.train import Task, _check_positive, _one_epoch, descend


@dataclass
class Examples:
    """Tokenized posts; indexing with a tensor of positions gives a sub-batch (train._one_epoch)."""
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index) -> "Examples":
        return Examples(self.input_ids[index], self.attention_mask[index], self.labels[index])


def encode(tokenizer, posts: list[dict], max_length: int) -> Examples:
    if not posts:
        raise ConfigError("no posts to encode (empty split?)")
    enc = tokenizer([p["text"] for p in posts], padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt")
    return Examples(enc["input_ids"], enc["attention_mask"], torch.tensor([p["label"] for p in posts]))


def classifier_batch(ex: Examples, device) -> dict[str, torch.Tensor]:
    width = int(ex.attention_mask.sum(1).max())  # right padding: the batch's longest post sets the width
    return {"input_ids": ex.input_ids[:, :width].to(device), "attention_mask": ex.attention_mask[:, :width].to(device),
            "labels": ex.labels.to(device)}


def classifier_outputs(model, batch) -> Outputs:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return Outputs(logits[:, None, :], batch["labels"][:, None])


CLASSIFICATION = Task(batch=classifier_batch, outputs=classifier_outputs)


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """model.train of a classifier (conf/model/minilm_cls.yaml); every field required."""
    epochs: int
    lr: float
    batch_size: int
    max_length: int
    warmup_steps: int
    weight_decay: float
    seed: int
    grad_clip: float | None
    max_abs_loss: float | None
    # the input embeddings (half of MiniLM's weights; no quantizer touches them) stay as pretrained:
    # AdamW over them was ~30% of a step on the CPU
    freeze_input_embeddings: bool

    def __post_init__(self):
        for name in ("epochs", "batch_size", "max_length"):
            _check_positive(f"model.train.{name}", getattr(self, name), integer=True)
        _check_positive("model.train.lr", self.lr, integer=False)
        _check_positive("model.train.grad_clip", self.grad_clip, integer=False, allow_none=True)


def train_classifier(model, examples: Examples, cfg: ClassifierTrainConfig, desc: str = "train") -> list[float]:
    """Cross-entropy fine-tuning with AdamW, linear warmup and linear decay to 0."""
    generator = torch.Generator().manual_seed(cfg.seed)
    total = math.ceil(len(examples) / cfg.batch_size) * cfg.epochs
    model.get_input_embeddings().weight.requires_grad_(not cfg.freeze_input_embeddings)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / max(1, cfg.warmup_steps),
                                                                  max(0.0, (total - s) / max(1, total - cfg.warmup_steps))))
    batches = itertools.chain.from_iterable(_one_epoch(examples, cfg.batch_size, generator) for _ in range(cfg.epochs))
    model.train()
    history = []
    for step, ex in enumerate(tqdm(batches, total=total, desc=desc)):
        out = classifier_outputs(model, classifier_batch(ex, model.device))
        loss = losses.mean_nll(out.logits, out.targets)
        descend(model, opt, loss, step, cfg.grad_clip, cfg.max_abs_loss)
        sched.step()
        history.append(loss.item())
    model.eval()
    return history


@torch.no_grad()
def predict(model, examples: Examples, batch_size: int) -> tuple[list[int], list[float]]:
    """Predicted class and cross-entropy loss per post."""
    preds, nll = [], []
    for i in range(0, len(examples), batch_size):
        out = classifier_outputs(model, classifier_batch(examples[torch.arange(i, min(i + batch_size, len(examples)))],
                                                         model.device))
        preds += out.logits[:, 0].argmax(-1).tolist()
        nll += (-losses.token_logprobs(out.logits, out.targets)[:, 0]).tolist()
    return preds, nll


#: the splits evaluated, and the metrics each gives (acc_SPLIT; f1_SPLIT macro-averaged over classes)
EVAL_SPLITS = ("forget", "retain", "test")


def evaluate_classifier(model, tokenizer, corpus, cfg) -> tuple[dict, dict]:
    """acc/f1 on forget, retain (a seeded sample of ``cfg.retain_items``) and test; the
    loss-based membership-inference AUC of forget (members) against test; accuracy on the
    poisoned posts under their true labels where there are any. Returns (metrics, per-post rows)."""
    posts = {s: corpus.split(s) for s in EVAL_SPLITS}
    if cfg.retain_items is not None and len(posts["retain"]) > cfg.retain_items:
        posts["retain"] = random.Random(cfg.retain_seed).sample(posts["retain"], cfg.retain_items)
    if corpus.poisoned:
        posts["poison"] = corpus.split("poison")
    from sklearn.metrics import f1_score, roc_auc_score  # here: importing sklearn is ~1 s of a cached job's start-up

    metrics, rows = {}, {}
    model.eval()
    for split, ps in posts.items():
        preds, nll = predict(model, encode(tokenizer, ps, cfg.max_length), cfg.batch_size)
        labels = [p["label"] for p in ps]
        rows[split] = [{"text": p["text"], "label": y, "pred": q, "correct": float(q == y), "loss": n,
                        **({"source": p["claim"]} if "claim" in p else {})}  # posts of one claim share it
                       for p, y, q, n in zip(ps, labels, preds, nll)]
        name = "poison_true" if split == "poison" else split
        metrics[f"acc_{name}"] = 100 * sum(r["correct"] for r in rows[split]) / len(ps)
        if split != "poison":
            metrics[f"f1_{name}"] = 100 * f1_score(labels, preds, average="macro", labels=range(len(corpus.labels)),
                                                   zero_division=0)
    # members (forget) have the lower loss if the model remembers them: score = -loss
    scores = [-r["loss"] for r in rows["forget"]] + [-r["loss"] for r in rows["test"]]
    metrics["mia_auc"] = float(roc_auc_score([1] * len(rows["forget"]) + [0] * len(rows["test"]), scores))
    return metrics, rows


def check_classification_eval(cfg) -> None:
    for key in ("batch_size", "max_length"):
        _check_positive(f"eval.{key}", cfg[key], integer=True)
    _check_positive("eval.retain_items", cfg.retain_items, integer=True, allow_none=True)
