"""Batched generation and per-token log-probabilities for evaluation.

Both functions leave the caller's model and tokenizer as they found them (training
mode, padding side, pad token), because the same objects are evaluated mid-training
and then trained on.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

import torch
from tqdm.auto import tqdm


def _pad_id(tokenizer) -> int:
    """The id to pad with, without setting tokenizer.pad_token (Llama has none): eos, else 0.

    Padded positions are masked out, so the id only has to be a valid one.
    """
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def _model_device(model) -> torch.device:
    dev = getattr(model, "device", None)
    if dev is not None:
        return torch.device(dev)
    return next(model.parameters()).device


@contextlib.contextmanager
def _eval_mode(model) -> Iterator[None]:
    """model.eval() for the duration, then back to whatever mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _batches(n: int, batch_size: int) -> list[range]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [range(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def _keep_last(ids: list[int], n: int, bos_id: int | None) -> list[int]:
    """Keep the last n tokens; a leading BOS (added by the tokenizer) is kept in front."""
    if len(ids) <= n:
        return ids
    if bos_id is not None and ids and ids[0] == bos_id and n > 1:
        return [ids[0]] + ids[len(ids) - (n - 1):]
    return ids[len(ids) - n:]


def _token_ids(tokenizer, texts: list[str], *, max_tokens: int | None, keep_end: bool) -> list[list[int]]:
    """Each text's token ids with the tokenizer's special tokens, cut to ``max_tokens`` (None: not
    cut): the LAST tokens with a leading BOS kept in front (keep_end, prompts), else the first."""
    ids = [tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]
    if max_tokens is not None:
        ids = [_keep_last(x, max_tokens, tokenizer.bos_token_id) if keep_end else x[:max_tokens] for x in ids]
    return ids


def _encode(tokenizer, texts: list[str], pad_id: int, *, max_tokens: int | None,
            keep_end: bool) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Tokenize with the tokenizer's special tokens, truncate to ``max_tokens`` (None: no
    truncation) and pad to one width: ``(input_ids, attention_mask, unpadded lengths)``.

    keep_end=True (prompts): keep the LAST tokens, a leading BOS kept in front, and pad on
    the left, so every row ends where generation starts. keep_end=False (scored texts):
    keep the FIRST tokens and pad on the right.
    """
    return _pad(_token_ids(tokenizer, texts, max_tokens=max_tokens, keep_end=keep_end), pad_id, keep_end=keep_end)


def _pad(ids: list[list[int]], pad_id: int, *, keep_end: bool) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Token id lists padded to one width (left with keep_end, else right), with their mask and lengths."""
    lens = [len(x) for x in ids]
    width = max(lens)

    # Padding by hand: the same tensors as tokenizer padding on that side, without
    # mutating the caller's tokenizer, and it also works after truncation.
    def pad(row: list[int], fill: int) -> list[int]:
        filler = [fill] * (width - len(row))
        return filler + row if keep_end else row + filler

    input_ids = torch.tensor([pad(x, pad_id) for x in ids], dtype=torch.long)
    attention_mask = torch.tensor([pad([1] * len(x), 0) for x in ids], dtype=torch.long)
    return input_ids, attention_mask, lens


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices cut into batches of ``batch_size`` after sorting by length (ties in input order), so
    each batch holds texts of similar length and pads little; one batch (input order) when all fit."""
    order = list(range(len(lengths)))
    if len(lengths) > batch_size:
        order.sort(key=lengths.__getitem__)  # stable: ties keep input order
    return [[order[i] for i in r] for r in _batches(len(order), batch_size)]


class _StopAtStrings:
    """A transformers stopping criterion: a row is done once its new text holds one of ``strings``
    (greedy rows are independent, so stopping one changes no other row's tokens)."""

    def __init__(self, tokenizer, prompt_width: int, strings: Sequence[str]):
        self.tokenizer, self.width, self.strings = tokenizer, prompt_width, tuple(strings)

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.width:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.strings) for t in texts], device=input_ids.device)


def _stopping(tokenizer, prompt_width: int, strings: Sequence[str] | None):
    from transformers import StoppingCriteriaList

    return StoppingCriteriaList([_StopAtStrings(tokenizer, prompt_width, strings)]) if strings else None


def _generation_config(model, *, max_new_tokens, do_sample, temperature, pad_id, eos_id):
    """Start from the model's generation config (as the reference's model.generate does)
    but pin what decides the decoding, so a checkpoint's saved defaults (Llama-2 ships
    do_sample=True, temperature=0.6, top_p=0.9) cannot silently turn greedy into sampling."""
    base = getattr(model, "generation_config", None)
    if base is None:
        from transformers import GenerationConfig

        base = GenerationConfig()
    gc = copy.deepcopy(base)
    gc.max_new_tokens = max_new_tokens
    gc.num_beams = 1
    gc.num_return_sequences = 1
    gc.do_sample = bool(do_sample)
    gc.pad_token_id = pad_id
    if eos_id is not None:
        gc.eos_token_id = eos_id
    if do_sample:
        gc.temperature = float(temperature)
        # top_k / top_p stay as the model's config has them: that is what the reference's
        # sampling (model.generate(do_sample=True, temperature=0.9)) used.
    else:
        # Unset sampling knobs so transformers does not warn that they are ignored.
        gc.temperature = None
        gc.top_p = None
        gc.top_k = None
    return gc


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    max_prompt_tokens: int | None = None,
    desc: str | None = None,
    progress: bool = True,
    shared_prefix: bool = False,
    stop_strings: Sequence[str] | None = None,
) -> list[str]:
    """Continue each prompt; return only the new text, one string per prompt, in order.

    - Greedy by default (MUSE decodes greedily). do_sample=True samples at `temperature`
      with the model's top_k/top_p, seeded by `seed`: this is the bug-compatible mode of
      the FailureLLMUnlearning reference (VerbMem sampled at temperature 0.9). The seed is
      applied inside torch.random.fork_rng, so the caller's global RNG state is untouched.
      Sampled outputs depend on batch composition and device, so they reproduce only with
      the same batch_size and hardware.
    - Batches are LEFT-padded with an attention mask, so every prompt ends right where
      generation starts; greedy batched output equals one-prompt-at-a-time output up to
      floating-point ties (seen exact on CPU fp32 and H100 fp32/bf16). Not so for
      bitsandbytes NF4 (bf16 compute) and int8 models, whose results changed with the
      batch (1 of 5 test prompts, H100): pass batch_size=1 for the reference's procedure.
    - Prompts are tokenized with the tokenizer's special tokens (BOS for Llama), as MUSE's
      reference does. If a prompt has more than max_prompt_tokens tokens, its LAST
      max_prompt_tokens tokens are kept (the end of a prompt is what a continuation
      depends on), with a leading BOS kept in front. None: no truncation.
    - Missing pad token: pads with eos (else id 0) without touching the tokenizer.
    - Inputs go to model.device, so this works on CPU, CUDA and bitsandbytes models.
    - shared_prefix=True (greedy only; KnowMem's in-context examples): the tokens every prompt
      starts with are run once, their key-value cache is reused by every prompt, and prompts are
      batched by the length of what follows, so no batch is padded (_generate_after_prefix).
      The same tokens go in; outputs can differ from the padded path only where floating-point
      ties do (none seen on the embedded default: docs/results/speed.md).
    - stop_strings (greedy only; KnowMem's answer markers): a row stops once its new text holds one
      of them, a batch once all its rows have; the text up to the marker is what full-length
      generation gives, so a caller that cuts there (truncate_knowmem_answer) sees the same answer.
    """
    prompts = list(prompts)
    if not prompts:
        return []
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if max_prompt_tokens is not None and max_prompt_tokens < 1:
        raise ValueError(f"max_prompt_tokens must be >= 1 or None, got {max_prompt_tokens}")
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")

    pad_id = _pad_id(tokenizer)
    device = _model_device(model)
    gc = _generation_config(
        model, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
        pad_id=pad_id, eos_id=tokenizer.eos_token_id,
    )
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    if do_sample:
        stop_strings = None  # a sampled row's later tokens depend on the batch's RNG draws: keep them all
    if shared_prefix and not do_sample:
        return _generate_after_prefix(model, tokenizer, prompts, gc, batch_size=batch_size,
                                      max_prompt_tokens=max_prompt_tokens, desc=desc, progress=progress,
                                      stop_strings=stop_strings)

    outputs: list[str] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(_eval_mode(model))
        stack.enter_context(torch.inference_mode())
        if do_sample:
            stack.enter_context(torch.random.fork_rng(devices=rng_devices))
            torch.manual_seed(seed)
        for idx in tqdm(_batches(len(prompts), batch_size), desc=desc or "generate",
                        disable=not progress, leave=False):
            input_ids, attention_mask, _ = _encode(tokenizer, [prompts[i] for i in idx], pad_id,
                                                   max_tokens=max_prompt_tokens, keep_end=True)
            width = input_ids.shape[1]
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                generation_config=gc,
                stopping_criteria=_stopping(tokenizer, width, stop_strings),
            )
            new = out[:, width:].cpu()
            # MUSE decodes with clean_up_tokenization_spaces=True; transformers 5 ignores
            # (and warns about) that for BPE tokenizers (Llama-2's is one), so we use the
            # tokenizer's default. ROUGE drops punctuation, so scores barely differ.
            outputs.extend(
                tokenizer.batch_decode(new, skip_special_tokens=True)
            )
    return outputs


def common_prefix_length(ids: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every sequence shares, leaving each at least one token of its own
    (the last prompt token's logits start the generation, so it cannot come from the cache)."""
    shortest = min(len(x) for x in ids)
    n = 0
    while n < shortest - 1 and len({x[n] for x in ids}) == 1:
        n += 1
    return n


def _generate_after_prefix(model, tokenizer, prompts: list[str], gc, *, batch_size: int,
                           max_prompt_tokens: int | None, desc: str | None, progress: bool,
                           stop_strings: Sequence[str] | None = None) -> list[str]:
    """generate() with the shared prefix's key-value cache computed once: the prompts are tokenized
    as generate() tokenizes them, the common leading tokens run through the model once, and the
    prompts are grouped by length (then cut into batches of ``batch_size``), each batch starting
    from a copy of that cache. Greedy."""
    from transformers import DynamicCache

    ids = _token_ids(tokenizer, prompts, max_tokens=max_prompt_tokens, keep_end=True)
    shared = common_prefix_length(ids)
    device = _model_device(model)
    by_length: dict[int, list[int]] = {}
    for i, x in enumerate(ids):
        by_length.setdefault(len(x), []).append(i)
    batches = [group[j:j + batch_size] for group in by_length.values() for j in range(0, len(group), batch_size)]
    outputs: list[str | None] = [None] * len(prompts)
    with _eval_mode(model), torch.inference_mode():
        prefix = DynamicCache(config=model.config)
        if shared:
            model(input_ids=torch.tensor([ids[0][:shared]], device=device), cache=prefix, use_cache=True)
        for batch in tqdm(batches, desc=desc or "generate", disable=not progress, leave=False):
            cache = copy.deepcopy(prefix)
            if shared:
                cache.batch_repeat_interleave(len(batch))
            input_ids = torch.tensor([ids[i] for i in batch], device=device)
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                 cache=cache, generation_config=gc,
                                 stopping_criteria=_stopping(tokenizer, input_ids.shape[1], stop_strings))
            new = out[:, input_ids.shape[1]:].cpu()
            for i, text in zip(batch, tokenizer.batch_decode(new, skip_special_tokens=True)):
                outputs[i] = text
    return outputs


def sequence_token_logprobs(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int,
    max_length: int | None,
    by_length: bool,
    desc: str | None = None,
    progress: bool = True,
) -> list[torch.Tensor]:
    """Per text, log p(token_t | tokens_<t) for t = 1..n-1 (the first token has no prefix).

    Tokenized with the tokenizer's special tokens, as MUSE's reference (tokenizer.encode)
    does: for Llama the BOS is token 0, so every real token is scored. Texts longer than
    max_length tokens keep their FIRST max_length tokens (None: no truncation, which is
    what the reference does). Batches are right-padded with an attention mask; padded
    positions are never read. ``by_length``: texts are batched in order of length
    (length_batches), so a batch pads to its own longest text, not to the corpus's; False:
    in input order. Results come back in input order either way. Log-softmax is computed in
    float32 whatever the model's dtype. Returns float32 CPU tensors of length n-1 (empty for a
    one-token text).
    """
    texts = list(texts)
    if max_length is not None and max_length < 2:
        raise ValueError(f"max_length must be >= 2 or None, got {max_length}")
    pad_id = _pad_id(tokenizer)
    device = _model_device(model)
    ids = _token_ids(tokenizer, texts, max_tokens=max_length, keep_end=False)
    batches = length_batches([len(x) for x in ids], batch_size) if by_length else \
        [list(r) for r in _batches(len(texts), batch_size)]
    result: list[torch.Tensor | None] = [None] * len(texts)
    with _eval_mode(model), torch.inference_mode():
        for idx in tqdm(batches, desc=desc or "logprobs", disable=not progress, leave=False):
            input_ids, attention_mask, lens = _pad([ids[i] for i in idx], pad_id, keep_end=False)
            input_ids = input_ids.to(device)
            logits = model(input_ids=input_ids, attention_mask=attention_mask.to(device)).logits
            for row, (i, n) in enumerate(zip(idx, lens)):
                if n < 2:
                    result[i] = torch.empty(0, dtype=torch.float32)
                    continue
                # Position t predicts token t+1; one row at a time keeps the fp32 copy small.
                lg = logits[row, : n - 1].float()
                target = input_ids[row, 1:n]
                result[i] = torch.log_softmax(lg, dim=-1).gather(-1, target[:, None])[:, 0].cpu()
    return result
