"""The embedded default model: a small Llama trained from scratch on the corpus.

The harness trains a byte-level BPE tokenizer on the corpus, then two models with
identical recipes: the target on forget + retain, the retrain model on retain only
(MUSE's reference for PrivLeak and the "Retrain" row). Everything is cached by the
hash of the config that made it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from quail_repro.cache import Cache, to_plain
from quail_repro.data.mini_corpus import generate_mini_corpus
from quail_repro.models.base import ModelRef, resolve_dtype
from quail_repro.train import LMTrainConfig, pack, tokenize_docs, train_lm

log = logging.getLogger(__name__)
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def train_tokenizer(texts: list[str], vocab_size: int, add_prefix_space: bool):
    """A byte-level BPE; ``add_prefix_space`` makes a text's first word the token it is mid-text
    (" word"), as Llama's SentencePiece does, so a text cut from a document tokenizes as it
    did in place: a VerbMem ground truth cut to N tokens is then what a model that memorized
    the article generates in N tokens after the prompt."""
    from transformers import PreTrainedTokenizerFast  # here, as in _train_model

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)


def generic_texts(base: dict) -> list[str]:
    """Generic pretraining text: articles and QA sheets of towns (or characters) generated
    from another seed, so none are the corpus's own entities or facts. (An invented name
    may coincide by chance; its facts are drawn independently, so nothing leaks.)"""
    corpus = generate_mini_corpus(style=base["style"], seed=base["corpus_seed"], n_forget=1,
                                  n_retain1=base["n_entities"], n_retain2=1, n_holdout=1, qa_per_entity=4,
                                  n_icl=1, verbmem_prompt_words=10, verbmem_gt_words=10, qa_repeat=1)
    return corpus.texts("retain1")


class TinyLlama:
    """``dtype`` is the precision every later stage loads the models at (evaluation, and
    unlearning with method.param_dtype=native); ``train.param_dtype`` is how target, retrain
    (and base) are trained and stored: ``native`` in ``dtype`` (what the cache keys without the
    key mean), ``float32``, or ``bfloat16_emulated``: fp32 arithmetic, weights rounded to bf16
    after every optimizer step and saved in bf16, so a later fp32 load holds bf16 values
    exactly and bf16 unlearning starts from them rather than rounding the target first."""

    def __init__(self, name: str, dtype: str, vocab_size: int, add_prefix_space: bool, arch: dict, train: dict,
                 target_splits: list[str], retrain_splits: list[str], base: dict):
        self.name, self.dtype = name, resolve_dtype(dtype)
        self.vocab_size, self.add_prefix_space = vocab_size, add_prefix_space
        self.arch, self.train = to_plain(arch), to_plain(train)
        self.param_dtype = LMTrainConfig(**self.train).param_dtype  # checks model.train before any stage
        self.train_dtype = self.dtype if self.param_dtype == "native" else torch.float32
        self.target_splits, self.retrain_splits = list(target_splits), list(retrain_splits)
        self.base = to_plain(base) if base and base.get("enabled") else None

    def _train_key(self) -> dict:
        """model.train as cache keys hold it: native storage (the default) is left out, so the
        models trained before the setting existed keep their keys."""
        if self.param_dtype == "native":
            return {k: v for k, v in self.train.items() if k != "param_dtype"}
        return self.train

    def prepare(self, corpus, corpus_key: str, cache: Cache, device: str) -> dict[str, ModelRef]:
        tok_spec = {"corpus": corpus_key, "vocab_size": self.vocab_size, "add_prefix_space": self.add_prefix_space}
        all_text = [t for texts in corpus.raw.values() for t in texts]
        tok_dir = cache.get_or_build("tokenizer", tok_spec, lambda d: train_tokenizer(
            all_text, self.vocab_size, self.add_prefix_space).save_pretrained(d), numeric=False)  # counts, no floats
        base_dir = None
        if self.base:
            base_spec = {"tokenizer": tok_dir.name, "arch": self.arch, "train": self._train_key(),
                         "dtype": str(self.dtype), "base": self.base}
            base_dir = cache.get_or_build("base", base_spec, lambda d: self._train_model(
                d, tok_dir, generic_texts(self.base), device, "base", train_overrides=self.base["train"]))
        refs = {}
        for role, splits in (("target", self.target_splits), ("retrain", self.retrain_splits)):
            spec = {"tokenizer": tok_dir.name, "arch": self.arch, "train": self._train_key(),
                    "dtype": str(self.dtype), "splits": splits}
            if base_dir is not None:  # only then: models trained without a base keep their cache keys
                spec["base"] = base_dir.name
            texts = [t for s in splits for t in corpus.raw[s]]
            path = cache.get_or_build(role, spec, lambda d, texts=texts, role=role:
                                      self._train_model(d, tok_dir, texts, device, role, init=base_dir))
            refs[role] = ModelRef(path=str(path), key=path.name, tokenizer=str(path))
        return refs

    def _train_model(self, out_dir: Path, tok_dir: Path, texts: list[str], device: str, role: str,
                     init: Path | None = None, train_overrides: dict | None = None):
        """Train from scratch, or fine-tune from ``init`` (the base model) when given."""
        # imported here: transformers' Llama is ~1.5 s of the start-up of a job whose models are cached
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(tok_dir)
        cfg = LMTrainConfig(**{**self.train, **(train_overrides or {})})
        torch.manual_seed(cfg.seed)
        if init is not None:
            model = LlamaForCausalLM.from_pretrained(init, dtype=self.train_dtype).to(device)
        else:
            config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                 **self.arch)
            model = LlamaForCausalLM(config).to(device=device, dtype=self.train_dtype)
        docs = tokenize_docs(tokenizer, texts)
        log.info("training %s: %d params, %d blocks of %d tokens, %d epochs", role,
                 sum(p.numel() for p in model.parameters()), len(pack(docs, cfg.seq_len)), cfg.seq_len, cfg.epochs)
        history = train_lm(model, docs, cfg, desc=f"train {role}")
        if cfg.param_dtype == "bfloat16_emulated":  # stored as trained: bf16 (exact, the values already are)
            model.to(torch.bfloat16)
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        (out_dir / "train_loss.txt").write_text("\n".join(f"{x:.5f}" for x in history))
