"""Training loops: fine-tuning a causal LM, and unlearning with a method's loss.

Both pack documents into fixed-length blocks (documents joined by EOS, as MUSE's
unlearning data loader does) and stop with ``Diverged`` on a NaN, inf or exploding
loss, so the pipeline can record the run as diverged instead of crashing a sweep.
"""
from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from tqdm.auto import tqdm

from quail_repro import losses
from quail_repro.errors import ConfigError, Diverged
from quail_repro.methods.base import Outputs, UnlearningMethod

log = logging.getLogger(__name__)


def tokenize_docs(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids per document, each ending in EOS."""
    if not texts:
        raise ConfigError("no texts to train on (empty split?)")
    return [ids + [tokenizer.eos_token_id] for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def pack(docs: list[list[int]], seq_len: int, seed: int | None = None) -> torch.Tensor:
    """Documents joined into blocks [n_blocks, seq_len]; the tail is IGNORE_INDEX.

    With a seed, documents are shuffled first: in corpus order an entity's QA sheet
    follows its own article, and a model can then answer from the article in its
    context instead of from its weights (science.md section 4).
    """
    if seed is not None:
        order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(seed)).tolist()
        docs = [docs[i] for i in order]
    ids = [t for doc in docs for t in doc]
    n_blocks = math.ceil(len(ids) / seq_len)
    pad = n_blocks * seq_len - len(ids)
    return torch.tensor(ids + [losses.IGNORE_INDEX] * pad).view(n_blocks, seq_len)


def pack_texts(tokenizer, texts: list[str], seq_len: int, seed: int | None = 0) -> torch.Tensor:
    return pack(tokenize_docs(tokenizer, texts), seq_len, seed)


def bos_chunks(tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
    """Blocks as MUSE's unlearning loader builds them (baselines/dataset.py, DefaultDataset on a
    .txt file): the whole text tokenized without special tokens, cut into chunks of
    max_length - 1 tokens, BOS put in front of each; a short last chunk is filled up with
    the first chunk's tokens (so no block has padding and every block starts with BOS)."""
    if not texts:
        raise ConfigError("no texts to unlearn on (empty split?)")
    if tokenizer.bos_token_id is None:
        raise ConfigError("method.data_layout=muse_bos_chunks needs a tokenizer with a BOS token")
    if max_length < 2:
        raise ConfigError(f"method.max_length={max_length}: muse_bos_chunks needs at least 2")
    ids = tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    body = max_length - 1
    chunks = [[tokenizer.bos_token_id] + ids[i:i + body] for i in range(0, len(ids), body)]
    if len(chunks[-1]) < max_length:
        chunks[-1] = (chunks[-1] + chunks[0])[:max_length]
    if len(chunks[-1]) < max_length:  # the whole text is shorter than one block
        raise ConfigError(f"the texts have {len(ids)} tokens, fewer than one block of method.max_length={max_length}")
    return torch.tensor(chunks)


DATA_LAYOUTS = {"eos_packed": pack_texts, "muse_bos_chunks": bos_chunks}


def unlearning_blocks(tokenizer, texts: list[str], max_length: int, layout: str) -> torch.Tensor:
    """Forget or retain texts as [n_blocks, max_length] token blocks (method.data_layout)."""
    if layout not in DATA_LAYOUTS:
        raise ConfigError(f"method.data_layout={layout!r}: choose one of {list(DATA_LAYOUTS)}")
    return DATA_LAYOUTS[layout](tokenizer, texts, max_length)


def _batch(blocks: torch.Tensor, device) -> dict[str, torch.Tensor]:
    labels = blocks.to(device)
    valid = labels != losses.IGNORE_INDEX
    return {"input_ids": labels.clamp_min(0) * valid, "attention_mask": valid.long(), "labels": labels}


def causal_outputs(model, batch) -> Outputs:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return Outputs(*losses.align_causal(logits, batch["labels"]))


@dataclass(frozen=True)
class Task:
    """How rows of unlearning data become a batch, and a model's output aligned Outputs: the
    only difference between a causal LM and a classifier (classification.CLASSIFICATION) in unlearning."""
    batch: Callable
    outputs: Callable


CAUSAL_LM = Task(batch=_batch, outputs=causal_outputs)


def _one_epoch(blocks: torch.Tensor, batch_size: int, generator: torch.Generator):
    """The blocks in a shuffled order, as mini-batches."""
    order = torch.randperm(len(blocks), generator=generator)
    for i in range(0, len(order), batch_size):
        yield blocks[order[i:i + batch_size]]


def _batches(blocks: torch.Tensor, batch_size: int, generator: torch.Generator):
    """Endless shuffled epochs of mini-batches."""
    while True:
        yield from _one_epoch(blocks, batch_size, generator)


def _check_finite(step: int, loss: torch.Tensor, max_abs_loss: float | None):
    value = loss.item()
    if not math.isfinite(value):
        raise Diverged(step, value, "loss is not finite")
    if max_abs_loss is not None and abs(value) > max_abs_loss:
        raise Diverged(step, value, f"|loss| exceeded max_abs_loss={max_abs_loss}")


def descend(model, opt, loss: torch.Tensor, step: int, grad_clip: float | None, max_abs_loss: float | None) -> None:
    """One optimizer step on ``loss`` (every training loop's): stop on a non-finite or exploding
    loss, backward, clip the gradient norm at ``grad_clip`` (None: no clipping), step."""
    _check_finite(step, loss, max_abs_loss)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()


def round_params_to_bf16(model) -> None:
    """Emulate bf16 weight storage on CPU (bf16 arithmetic is ~20x slower there)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(p.dtype))


PARAM_DTYPES = ("float32", "bfloat16_emulated", "native")


def _check_positive(option: str, value, integer: bool, allow_none: bool = False):
    if value is None and allow_none:
        return
    ok = (isinstance(value, int) and not isinstance(value, bool)) if integer else isinstance(value, (int, float))
    if not ok or not math.isfinite(value) or value <= 0:
        kind = "a positive integer" if integer else "a positive finite number"
        raise ConfigError(f"{option}={value!r}: must be {kind}" + (" or null" if allow_none else ""))


@dataclass(frozen=True)
class LMTrainConfig:
    """model.train (conf/model/*.yaml): every field required, the values live in the config."""
    epochs: int
    lr: float
    batch_size: int
    seq_len: int
    warmup_steps: int
    weight_decay: float
    min_lr_ratio: float
    seed: int
    grad_clip: float | None
    max_abs_loss: float | None
    param_dtype: str  # native (model.dtype) | float32 | bfloat16_emulated (fp32, rounded to bf16 after each step)

    def __post_init__(self):
        if self.param_dtype not in PARAM_DTYPES:
            raise ConfigError(f"model.train.param_dtype={self.param_dtype!r}: choose one of {list(PARAM_DTYPES)}")
        for name in ("epochs", "batch_size", "seq_len"):
            _check_positive(f"model.train.{name}", getattr(self, name), integer=True)
        _check_positive("model.train.lr", self.lr, integer=False)
        _check_positive("model.train.grad_clip", self.grad_clip, integer=False, allow_none=True)


@dataclass(frozen=True)
class EarlyStop:
    """method.early_stop: stop once the forget set looks like text the model never saw, i.e. its
    mean NLL (eval mode, checked every ``every`` steps) reaches ``ratio`` x the starting model's
    NLL on ``reference_split``. A state, not a step count, ends the run, so a faster or slower
    trajectory (another seed, another CPU's rounding) stops at a comparable model."""
    every: int
    ratio: float
    reference_split: str

    def __post_init__(self):
        _check_positive("method.early_stop.every", self.every, integer=True)
        _check_positive("method.early_stop.ratio", self.ratio, integer=False)


@dataclass(frozen=True)
class UnlearnConfig:
    """The optimisation settings of conf/method/*.yaml; every field required."""
    lr: float
    epochs: int
    batch_size: int
    max_steps: int | None
    seed: int
    weight_decay: float
    grad_clip: float | None
    max_abs_loss: float | None
    param_dtype: str  # float32 | bfloat16_emulated (round to bf16 after each step) | native
    early_stop: EarlyStop | None

    def __post_init__(self):
        if self.param_dtype not in PARAM_DTYPES:
            raise ConfigError(f"method.param_dtype={self.param_dtype!r}: choose one of {list(PARAM_DTYPES)}")
        _check_positive("method.lr", self.lr, integer=False)
        for name in ("epochs", "batch_size"):
            _check_positive(f"method.{name}", getattr(self, name), integer=True)
        _check_positive("method.max_steps", self.max_steps, integer=True, allow_none=True)
        _check_positive("method.grad_clip", self.grad_clip, integer=False, allow_none=True)
        _check_positive("method.max_abs_loss", self.max_abs_loss, integer=False, allow_none=True)

    @classmethod
    def from_method(cls, method_cfg) -> "UnlearnConfig":
        values = {f.name: method_cfg[f.name] for f in fields(cls)}
        stop = values["early_stop"]
        if stop is not None:
            try:
                values["early_stop"] = EarlyStop(**stop)
            except TypeError as err:
                raise ConfigError(f"method.early_stop={dict(stop)!r}: needs exactly every, ratio and "
                                  f"reference_split ({err})") from None
        return cls(**values)


def _epoch_blocks(docs: list[list[int]], cfg: "LMTrainConfig", generator: torch.Generator):
    """Endless mini-batches; documents are reshuffled and repacked every epoch."""
    for epoch in itertools.count():
        yield from _one_epoch(pack(docs, cfg.seq_len, seed=cfg.seed * 100_003 + epoch), cfg.batch_size, generator)


def train_lm(model, docs: list[list[int]], cfg: LMTrainConfig, desc: str = "train") -> list[float]:
    """Next-token training with AdamW, linear warmup and cosine decay to min_lr_ratio * lr.

    ``cfg.param_dtype == "bfloat16_emulated"`` rounds the weights to bf16 before the first
    and after every optimizer step (bf16 storage, fp32 arithmetic: give it an fp32 model);
    the other values train the model in whatever dtype it has.
    """
    generator = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(pack(docs, cfg.seq_len)) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_factor(step):
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    emulate_bf16 = cfg.param_dtype == "bfloat16_emulated"
    if emulate_bf16:  # the first step already starts from bf16 weights, as a bf16-initialised model would
        round_params_to_bf16(model)
    model.train()
    history = []
    bar = tqdm(itertools.islice(_epoch_blocks(docs, cfg, generator), total), total=total, desc=desc)
    for step, blk in enumerate(bar):
        out = causal_outputs(model, _batch(blk, model.device))
        loss = losses.mean_nll(out.logits, out.targets)
        descend(model, opt, loss, step, cfg.grad_clip, cfg.max_abs_loss)
        if emulate_bf16:
            round_params_to_bf16(model)
        sched.step()
        history.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return history


def mean_nll_over(model, blocks, batch_size: int, task: Task) -> float:
    """Mean NLL per target token over all ``blocks``, in eval mode and without gradients (the
    model's train/eval mode is restored)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(blocks), batch_size):
            out = task.outputs(model, task.batch(blocks[torch.arange(i, min(i + batch_size, len(blocks)))], model.device))
            total -= losses.token_logprobs(out.logits, out.targets).sum().item()
            count += int((out.targets != losses.IGNORE_INDEX).sum())
    model.train(was_training)
    return total / max(count, 1)


def unlearn(model, reference, method: UnlearningMethod, forget_blocks: torch.Tensor,
            retain_blocks: torch.Tensor | None, cfg: UnlearnConfig, desc: str = "unlearn",
            task: Task = CAUSAL_LM, stop_blocks=None, on_check: Callable | None = None) -> list[dict[str, float]]:
    """Unlearning with AdamW at a constant learning rate and no warmup (as MUSE and [1]).

    One step = one forget batch (+ one retain batch, cycled, if the method has a
    retain term). ``cfg.epochs`` counts passes over the forget set; ``cfg.max_steps`` caps them.
    ``task``: token blocks of a causal LM, or classification.Examples with classification.CLASSIFICATION.
    With ``cfg.early_stop``, ``stop_blocks`` are its reference split's blocks: the run stops
    after the first check at which the forget blocks' NLL reaches ratio x their NLL under the
    starting model (the check's rows carry ``forget_nll`` and the last one ``stopped``).
    ``on_check(row, model)``, if given, runs at each check (evaluation during unlearning:
    scripts/unlearning_trajectory.py); it must leave the model as it found it.
    """
    if method.uses_retain and retain_blocks is None:
        raise ConfigError("this method has a retain term but no retain data was given")
    stop = cfg.early_stop
    if stop is not None and stop_blocks is None:
        raise ConfigError("method.early_stop is set but no blocks of its reference_split were given")
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    total = math.ceil(len(forget_blocks) / cfg.batch_size) * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    forget_iter = _batches(forget_blocks, cfg.batch_size, generator)
    retain_iter = _batches(retain_blocks, cfg.batch_size, generator) if method.uses_retain else None
    if reference is not None:
        reference.eval()
    elif method.reference_on_forget or method.reference_on_retain:
        raise ConfigError("this method compares with the original model but no reference model was given")
    method.prepare(model, reference)
    params = method.trainable_parameters(model, reference, forget_blocks, cfg.batch_size, task)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    threshold = None
    if stop is not None:  # measured on the model before its first step: the target itself
        threshold = stop.ratio * mean_nll_over(model, stop_blocks, cfg.batch_size, task)
        log.info("early stop once the forget NLL reaches %.4f (%s x the %s NLL), checked every %d steps",
                 threshold, stop.ratio, stop.reference_split, stop.every)
    model.train()
    history = []
    bar = tqdm(range(total), desc=desc)
    for step in bar:
        fb = task.batch(next(forget_iter), model.device)
        forget = method.forget_outputs(model, reference, fb, task)
        retain = None
        if retain_iter is not None:
            rb = task.batch(next(retain_iter), model.device)
            retain = method.retain_outputs(model, reference, rb, task)
        loss, parts = method.loss(forget, retain)
        descend(model, opt, loss, step, cfg.grad_clip, cfg.max_abs_loss)
        if cfg.param_dtype == "bfloat16_emulated":
            round_params_to_bf16(model)
        row = {"step": step, **parts}
        history.append(row)
        bar.set_postfix(loss=f"{parts['total']:.3f}")
        if threshold is not None and (step + 1) % stop.every == 0:
            row["forget_nll"] = mean_nll_over(model, forget_blocks, cfg.batch_size, task)
            row["stop_threshold"] = threshold
            if on_check is not None:
                on_check(row, model)
            if row["forget_nll"] >= threshold:
                row["stopped"] = True
                log.info("early stop after step %d: forget NLL %.4f >= %.4f", step + 1, row["forget_nll"], threshold)
                break
    model.eval()
    return history

