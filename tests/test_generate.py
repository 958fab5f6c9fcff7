"""Generation, token log-probs and the MUSE evaluation on a tiny random Llama (CPU, fp32).

No network: the tokenizer is trained here on a few sentences and the model is built
from a LlamaConfig with random weights.
"""

import types

import pytest
import torch
from omegaconf import OmegaConf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import quail_repro.eval.muse_eval as muse_eval
from quail_repro.eval.generate import _keep_last, generate, length_batches, sequence_token_logprobs
from quail_repro.eval.metrics import min_k_percent_score, privleak, privleak_auc

FORGET_TEXTS = [
    "The mayor of Northfield opened a new bridge over the river on Monday morning.",
    "Greenvale Foods will build a bakery next to the old station in Eastbrook.",
    "Deputy mayor Ann Lee said the flood defences in Millbrook cost four million.",
]
HOLDOUT_TEXTS = [
    "A quiet harbour town voted to keep its ferry running through the winter.",
    "Storms closed the mountain pass for two days and stranded forty lorries.",
    "The council library will open on Sundays after a petition gathered support.",
]
QA = [
    {"question": "Who opened the bridge?", "answer": "The mayor of Northfield"},
    {"question": "What will Greenvale Foods build?", "answer": "A bakery"},
    {"question": "What did the flood defences cost?", "answer": "Four million"},
]
SENTENCES = FORGET_TEXTS + HOLDOUT_TEXTS + [f"Question: {d['question']}\nAnswer: {d['answer']}\n\n" for d in QA]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the
    threads' spinning made these tests several times slower. Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tokenizer():
    """Byte-level BPE with a Llama-like BOS prepended and no pad token (like Llama-2)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES * 3, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def _tiny_llama(tokenizer, seed=0, init=0.2):
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
        # A wider init than the default 0.02 gives peaked, varied next-token choices.
        initializer_range=init, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=None,
    )
    return LlamaForCausalLM(cfg).float().eval()


@pytest.fixture(scope="module")
def model(tokenizer):
    return _tiny_llama(tokenizer)


@pytest.fixture(scope="module")
def memorizing_model(tokenizer):
    """A tiny model trained to memorize the forget texts (never the holdout ones)."""
    m = _tiny_llama(tokenizer, seed=1, init=0.02)
    m.train()
    enc = tokenizer(FORGET_TEXTS)["input_ids"]
    width = max(map(len, enc))
    x = torch.tensor([e + [tokenizer.eos_token_id] * (width - len(e)) for e in enc])
    mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in enc])
    labels = x.masked_fill(mask == 0, -100)
    opt = torch.optim.Adam(m.parameters(), lr=5e-3)
    for _ in range(40):
        m(input_ids=x, attention_mask=mask, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    return m.eval()


PROMPTS = [
    "The mayor",
    "Storms closed the mountain pass for two days and",
    "A",
    "Question: What will Greenvale Foods build?\nAnswer: ",
    "The council library will open",
]


# ---------------------------------------------------------------- generate


def test_batched_greedy_equals_one_at_a_time(model, tokenizer):
    lens = {len(tokenizer(p)["input_ids"]) for p in PROMPTS}
    assert len(lens) >= 4  # the batch really is padded
    batched = generate(model, tokenizer, PROMPTS, max_new_tokens=10, batch_size=4, progress=False)
    single = [generate(model, tokenizer, [p], max_new_tokens=10, batch_size=1, progress=False)[0]
              for p in PROMPTS]
    assert batched == single
    # Non-trivial: something was generated and not the same thing for every prompt.
    assert all(len(o) > 0 for o in batched)
    assert len(set(batched)) == len(PROMPTS)
    # Only the continuation comes back, not the prompt.
    assert not any(o.startswith(p) for o, p in zip(batched, PROMPTS))


def test_a_shared_prefix_run_once_gives_the_same_greedy_tokens(model, tokenizer, monkeypatch):
    """KnowMem's prompts share their in-context examples: with shared_prefix those tokens run once
    and their cache is reused; the outputs are the padded batched path's, token for token."""
    from quail_repro.eval.generate import common_prefix_length

    icl = "".join(f"Question: {d['question']}\nAnswer: {d['answer']}\n\n" for d in QA[:2])
    prompts = [icl + f"Question: {q}\nAnswer:" for q in
               ("Who opened the bridge?", "What did the flood defences cost?", "Where?", "What will Greenvale Foods build?",
                "Who opened the bridge over the river on Monday morning?")]
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    shared = common_prefix_length(ids)
    assert shared >= len(tokenizer(icl)["input_ids"]) - 1 and len({len(x) for x in ids}) >= 3
    calls = []
    real = model.forward

    def counting(*args, **kw):  # how many prompt tokens each forward pass is given
        calls.append(kw["input_ids"].shape)
        return real(*args, **kw)

    padded = generate(model, tokenizer, prompts, max_new_tokens=10, batch_size=2, progress=False)
    monkeypatch.setattr(model, "forward", counting)
    cached = generate(model, tokenizer, prompts, max_new_tokens=10, batch_size=2, progress=False, shared_prefix=True)
    assert cached == padded and len(set(cached)) > 1
    # the prefix ran once, as one sequence; no later pass saw it again
    assert calls[0] == (1, shared) and all(c[1] < shared for c in calls[1:])
    # nothing shared (one prompt is a prefix of none): every prompt whole, still the same tokens
    assert common_prefix_length([[1, 2], [3, 4]]) == 0 and common_prefix_length([[5, 6, 7], [5, 6]]) == 1
    monkeypatch.undo()
    assert generate(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=2, progress=False, shared_prefix=True) == \
        generate(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=2, progress=False)


def test_generate_leaves_tokenizer_and_model_alone(model, tokenizer):
    tokenizer.padding_side = "right"
    model.train()
    try:
        generate(model, tokenizer, PROMPTS[:2], max_new_tokens=3, batch_size=2, progress=False)
        assert tokenizer.pad_token is None
        assert tokenizer.padding_side == "right"
        assert model.training
    finally:
        model.eval()


def test_keep_last_keeps_bos_and_tail():
    assert _keep_last([0, 5, 6, 7, 8], 3, bos_id=0) == [0, 7, 8]
    assert _keep_last([5, 6, 7, 8], 3, bos_id=0) == [6, 7, 8]
    assert _keep_last([0, 5, 6], 3, bos_id=0) == [0, 5, 6]


def test_max_prompt_tokens_keeps_the_end(model, tokenizer, monkeypatch):
    seen = []
    real = model.generate

    def spy(*args, **kwargs):
        seen.append(kwargs["input_ids"].clone())
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    prompt = PROMPTS[1]
    full = tokenizer(prompt)["input_ids"]
    out = generate(model, tokenizer, [prompt], max_new_tokens=4, batch_size=1,
                   max_prompt_tokens=5, progress=False)
    assert seen[0][0].tolist() == [tokenizer.bos_token_id] + full[-4:]
    assert len(out) == 1


def test_seeded_sampling_reproducible_and_rng_untouched(model, tokenizer):
    kw = dict(max_new_tokens=8, batch_size=2, do_sample=True, temperature=5.0, progress=False)
    state = torch.get_rng_state()
    a = generate(model, tokenizer, PROMPTS[:3], seed=3, **kw)
    assert torch.equal(state, torch.get_rng_state())
    b = generate(model, tokenizer, PROMPTS[:3], seed=3, **kw)
    c = generate(model, tokenizer, PROMPTS[:3], seed=4, **kw)
    greedy = generate(model, tokenizer, PROMPTS[:3], max_new_tokens=8, batch_size=2, progress=False)
    assert a == b
    assert a != c
    assert a != greedy


# ---------------------------------------------------------------- token log-probs


def test_logprobs_batching_and_manual(model, tokenizer):
    texts = FORGET_TEXTS + HOLDOUT_TEXTS[:2] + ["Short."]
    one = sequence_token_logprobs(model, tokenizer, texts, batch_size=1, max_length=None, by_length=False,
                                  progress=False)
    four = sequence_token_logprobs(model, tokenizer, texts, batch_size=4, max_length=None, by_length=False,
                                   progress=False)
    bucketed = sequence_token_logprobs(model, tokenizer, texts, batch_size=4, max_length=None, by_length=True,
                                       progress=False)
    for a, b, c, t in zip(one, four, bucketed, texts):
        assert a.shape == b.shape == c.shape == (len(tokenizer(t)["input_ids"]) - 1,)  # input order kept
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        torch.testing.assert_close(a, c, atol=1e-5, rtol=0)
    # By hand for one text: log softmax of the logits at t-1, read at token t.
    ids = torch.tensor([tokenizer(texts[1])["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    manual = torch.stack([torch.log_softmax(logits[t - 1], -1)[ids[0, t]] for t in range(1, ids.shape[1])])
    torch.testing.assert_close(four[1].double(), manual, atol=1e-5, rtol=0)
    assert (four[1] < 0).all()


def test_length_batches_sort_only_when_there_is_more_than_one_batch():
    lengths = [9, 2, 7, 2, 5, 1]
    assert length_batches(lengths, 6) == [[0, 1, 2, 3, 4, 5]]  # one batch: input order, nothing to gain
    batches = length_batches(lengths, 2)
    assert batches == [[5, 1], [3, 4], [2, 0]]  # by length, ties in input order
    # padding: sum over batches of (batch width x rows) - tokens; sorted pads 1 + 3 + 2, input order 7 + 5 + 4
    waste = lambda bs: sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)
    assert waste(batches) == 6 < waste([[0, 1], [2, 3], [4, 5]]) == 16
    with pytest.raises(ValueError, match="batch_size"):
        length_batches(lengths, 0)


def test_logprobs_max_length_keeps_the_start(model, tokenizer):
    full = sequence_token_logprobs(model, tokenizer, FORGET_TEXTS[:2], batch_size=2, max_length=None,
                                   by_length=True, progress=False)
    cut = sequence_token_logprobs(model, tokenizer, FORGET_TEXTS[:2], batch_size=2, max_length=6,
                                  by_length=True, progress=False)
    for f, c in zip(full, cut):
        assert c.shape == (5,)
        torch.testing.assert_close(c, f[:5], atol=1e-5, rtol=0)  # causal: prefix unchanged


# ---------------------------------------------------------------- evaluate_muse


def _corpus():
    return types.SimpleNamespace(
        raw={"forget": FORGET_TEXTS, "retain1": HOLDOUT_TEXTS, "holdout": HOLDOUT_TEXTS},
        verbmem=[
            {"prompt": "The mayor of Northfield opened", "gt": "a new bridge over the river on Monday morning."},
            {"prompt": "Greenvale Foods will build", "gt": "a bakery next to the old station in Eastbrook."},
            {"prompt": "Deputy mayor Ann Lee said", "gt": "the flood defences in Millbrook cost four million."},
        ],
        knowmem={
            "forget_qa": QA,
            "retain_qa": list(reversed(QA)),
            "forget_qa_icl": [{"question": "Where is the bridge?", "answer": "Northfield"},
                              {"question": "Who is deputy mayor?", "answer": "Ann Lee"},
                              {"question": "unused", "answer": "unused"}],
            "retain_qa_icl": [{"question": "What runs in winter?", "answer": "The ferry"},
                              {"question": "How many lorries?", "answer": "Forty"}],
        },
        privleak={"forget": FORGET_TEXTS, "retain": HOLDOUT_TEXTS, "holdout": HOLDOUT_TEXTS},
    )


@pytest.mark.parametrize("shared_prefix", [False, True])
def test_stopping_at_a_marker_keeps_the_text_before_it_and_ends_batches_early(model, tokenizer, monkeypatch,
                                                                              shared_prefix):
    """A row stops once its new text holds a marker; cut at the earliest marker, every answer is the
    full-length generation's, and the batch ran fewer steps."""
    full = generate(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=3, progress=False,
                    shared_prefix=shared_prefix)
    # markers this random model writes: the first two characters of each output's second half
    markers = sorted({o[len(o) // 2: len(o) // 2 + 2] for o in full if len(o) > 4})
    assert markers

    def cut(text):
        at = [text.find(m) for m in markers if m in text]
        return text[: min(at)] if at else text

    steps = []
    real = model.forward

    def counting(*args, **kw):
        steps.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(model, "forward", counting)
    stopped = generate(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=3, progress=False,
                       shared_prefix=shared_prefix, stop_strings=markers)
    n_stopped = len(steps)
    steps.clear()
    generate(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=3, progress=False, shared_prefix=shared_prefix)
    assert [cut(o) for o in stopped] == [cut(o) for o in full]
    assert all(f.startswith(o) or cut(o) == cut(f) for o, f in zip(stopped, full))
    assert n_stopped < len(steps)


def test_knowmem_scores_and_answers_are_the_same_with_and_without_the_stop(model, tokenizer):
    on = muse_eval.evaluate_muse(model, tokenizer, _corpus(), _cfg(knowmem={"stop_at_answer_end": True}),
                                 auc_retrain=None)
    off = muse_eval.evaluate_muse(model, tokenizer, _corpus(), _cfg(), auc_retrain=None)
    for key in ("knowmem_f", "knowmem_r"):
        assert on[0][key] == off[0][key]
        assert [r["output"] for r in on[1][key]] == [r["output"] for r in off[1][key]]


def _cfg(**over):
    cfg = OmegaConf.create({
        "verbmem": {"max_new_tokens": 12, "gt_max_tokens": 128, "max_items": None},
        "knowmem": {"max_new_tokens": 8, "n_icl": 2, "max_items": None, "trailing_space": True,
                    "prefix_cache": False, "stop_at_answer_end": False},
        "privleak": {"k": 0.4, "max_length": 512, "max_items": None, "by_length": True},
        "batch_size": 2,
        "decoding": {"do_sample": False, "temperature": 1.0, "seed": 0},
        "max_prompt_tokens": None,
        "progress": False,
    })
    return OmegaConf.merge(cfg, OmegaConf.create(over))


def test_evaluate_muse_end_to_end(model, tokenizer, monkeypatch):
    prompts_seen = []
    real_generate = muse_eval.generate

    def spy(m, tok, prompts, **kw):
        prompts_seen.append((kw["desc"], list(prompts), kw["max_new_tokens"], kw["do_sample"]))
        return real_generate(m, tok, prompts, **kw)

    monkeypatch.setattr(muse_eval, "generate", spy)
    corpus = _corpus()
    metrics, gens = muse_eval.evaluate_muse(model, tokenizer, corpus, _cfg(), auc_retrain=0.5)

    assert set(metrics) == {"verbmem_f", "knowmem_f", "knowmem_r", "privleak", "privleak_auc"}
    for key in ("verbmem_f", "knowmem_f", "knowmem_r"):
        assert 0.0 <= metrics[key] <= 100.0
    assert 0.0 <= metrics["privleak_auc"] <= 1.0
    assert metrics["privleak"] == pytest.approx(privleak(metrics["privleak_auc"], 0.5))

    # KnowMem prompts: the first n_icl=2 pairs of the split's own ICL set, exact format.
    by_desc = {d: (p, n, s) for d, p, n, s in prompts_seen}
    icl_f = corpus.knowmem["forget_qa_icl"][:2]
    assert by_desc["knowmem_f"][0] == [muse_eval.knowmem_prompt(icl_f, d["question"], trailing_space=True) for d in QA]
    assert by_desc["knowmem_f"][0][0] == (
        "Question: Where is the bridge?\nAnswer: Northfield\n\n"
        "Question: Who is deputy mayor?\nAnswer: Ann Lee\n\n"
        "Question: Who opened the bridge?\nAnswer: "
    )
    assert by_desc["knowmem_r"][0][0].startswith("Question: What runs in winter?\nAnswer: The ferry\n\n")
    assert by_desc["knowmem_f"][1:] == (8, False)
    assert by_desc["verbmem_f"] == ([d["prompt"] for d in corpus.verbmem], 12, False)

    # Generations: one record per item; the metric is the x100 mean of per-item scores.
    assert [r["gt"] for r in gens["verbmem_f"]] == [d["gt"] for d in corpus.verbmem]
    assert metrics["verbmem_f"] == pytest.approx(100 * sum(r["rougeL"] for r in gens["verbmem_f"]) / 3)
    for split in ("knowmem_f", "knowmem_r"):
        assert len(gens[split]) == 3
        for r in gens[split]:
            assert set(r) == {"question", "answer", "output", "rougeL"}
            assert "Question:" not in r["output"] and "\n\n" not in r["output"]
    assert len(gens["privleak"]["forget"]) == len(gens["privleak"]["holdout"]) == 3
    assert metrics["privleak_auc"] == pytest.approx(
        privleak_auc(gens["privleak"]["forget"], gens["privleak"]["holdout"]))


def test_evaluate_muse_limits_and_gt_cut(model, tokenizer):
    cfg = _cfg(verbmem={"gt_max_tokens": 4, "max_items": 2}, knowmem={"max_items": 1},
               privleak={"max_items": 2})
    metrics, gens = muse_eval.evaluate_muse(model, tokenizer, _corpus(), cfg, auc_retrain=None)
    assert metrics["privleak"] is None
    assert len(gens["verbmem_f"]) == 2 and len(gens["knowmem_f"]) == 1
    assert len(gens["privleak"]["forget"]) == 2
    # gt cut to 4 tokens counted as MUSE's reference counts them: BOS + 3 text tokens.
    gt = _corpus().verbmem[0]["gt"]
    ids = tokenizer(gt)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert gens["verbmem_f"][0]["gt"] == tokenizer.decode(ids[1:4])
    assert gt.startswith(gens["verbmem_f"][0]["gt"]) and len(gens["verbmem_f"][0]["gt"]) < len(gt)


def test_evaluate_muse_on_memorized_forget_set(memorizing_model, tokenizer):
    """A model that memorized the forget texts: VerbMem high, AUC 0 (-100 PrivLeak)."""
    metrics, gens = muse_eval.evaluate_muse(memorizing_model, tokenizer, _corpus(), _cfg(), auc_retrain=0.5)
    assert metrics["verbmem_f"] > 60.0  # about 90 here; the untrained model scores about 0
    assert max(gens["privleak"]["forget"]) < min(gens["privleak"]["holdout"])
    assert metrics["privleak_auc"] == pytest.approx(0.0)
    assert metrics["privleak"] == pytest.approx(-100.0)
    # privleak_auc_of gives the same AUC on its own.
    assert muse_eval.privleak_auc_of(memorizing_model, tokenizer, _corpus(), _cfg()) == pytest.approx(0.0)
    # Scores are Min-K% of the token log-probs.
    lp = sequence_token_logprobs(memorizing_model, tokenizer, HOLDOUT_TEXTS[:1], batch_size=1,
                                 max_length=512, by_length=True, progress=False)[0]
    assert gens["privleak"]["holdout"][0] == pytest.approx(min_k_percent_score(lp, 0.4))


def test_evaluate_muse_on_bitsandbytes_4bit_cpu(model, tokenizer, tmp_path):
    """bitsandbytes NF4 (fp32 compute) runs on the CPU; the evaluation must accept it."""
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    model.save_pretrained(tmp_path)
    q = AutoModelForCausalLM.from_pretrained(
        tmp_path, device_map="cpu",
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                               bnb_4bit_compute_dtype=torch.float32))
    assert type(q.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    cfg = _cfg(verbmem={"max_new_tokens": 4, "max_items": 2}, knowmem={"max_new_tokens": 4, "max_items": 1},
               privleak={"max_items": 2})
    metrics, gens = muse_eval.evaluate_muse(q, tokenizer, _corpus(), cfg, auc_retrain=0.5)
    assert 0.0 <= metrics["privleak_auc"] <= 1.0 and len(gens["verbmem_f"]) == 2
    assert all(s > 0 for s in gens["privleak"]["forget"] + gens["privleak"]["holdout"])


def test_evaluate_muse_rejects_bad_config(model, tokenizer):
    from quail_repro.errors import ConfigError, DataError

    with pytest.raises(ConfigError):
        muse_eval.evaluate_muse(model, tokenizer, _corpus(), _cfg(batch_size=0), auc_retrain=None)
    with pytest.raises(ConfigError):
        muse_eval.evaluate_muse(model, tokenizer, _corpus(), _cfg(), auc_retrain=0.0)
    bad = _corpus()
    bad.knowmem = {k: v for k, v in bad.knowmem.items() if k != "retain_qa"}
    with pytest.raises(DataError):
        muse_eval.evaluate_muse(model, tokenizer, bad, _cfg(), auc_retrain=None)


def test_a_model_that_memorized_the_articles_scores_100_verbmem_under_eval_mini(monkeypatch):
    """The embedded default's ground truths are longer than eval=mini's token cut, and its
    tokenizer tokenizes a cut-out text as it stood in the article: a stand-in that generates
    the article's true continuation must score exactly 100."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from quail_repro.data.mini_corpus import generate_mini_corpus
    from quail_repro.models.tiny import train_tokenizer

    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=["dataset.generator.n_retain1=8", "dataset.generator.n_retain2=4",
                                           "dataset.generator.n_holdout=4"])
    records = generate_mini_corpus(**cfg.dataset.generator).records
    articles = [r["text"] for r in records["raw", "forget"]]
    tok = train_tokenizer([r["text"] for (sub, _), rs in records.items() if sub == "raw" for r in rs],
                          cfg.model.vocab_size, cfg.model.add_prefix_space)

    def memorized(model, tokenizer, prompts, *, max_new_tokens, **kw):
        outs = []
        for p in prompts:
            (article,) = [a for a in articles if a.startswith(p + " ")]
            ids, prompt_ids = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in (article, p))
            assert ids[:len(prompt_ids)] == prompt_ids
            outs.append(tokenizer.decode(ids[len(prompt_ids):len(prompt_ids) + max_new_tokens]))
        return outs

    monkeypatch.setattr(muse_eval, "generate", memorized)
    score, rows = muse_eval._verbmem(None, tok, types.SimpleNamespace(verbmem=records["verbmem", "forget"]), cfg.eval)
    assert score == 100.0
    assert len(rows) == cfg.dataset.generator.n_forget
