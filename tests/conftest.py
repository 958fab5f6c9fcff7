"""Keep every cache (HF, datasets, wandb, torch) inside a temporary folder and offline."""
import os
import tempfile

_tmp = tempfile.mkdtemp(prefix="quail_tests_")
for var, sub in [("HF_HOME", "hf"), ("HF_DATASETS_CACHE", "hf/datasets"), ("WANDB_DIR", "wandb"),
                 ("WANDB_CACHE_DIR", "wandb/cache"), ("WANDB_DATA_DIR", "wandb/data"),
                 ("WANDB_CONFIG_DIR", "wandb/config"), ("TORCHINDUCTOR_CACHE_DIR", "inductor"),
                 ("MPLCONFIGDIR", "mpl")]:
    os.environ[var] = os.path.join(_tmp, sub)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """A random Llama of width 256 (rows fit llama.cpp's 256-weight super-blocks, GPTQ's groups) and a
    byte-level BPE, saved as from_pretrained loads it: (folder, model)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from quail_repro.models.tiny import train_tokenizer

    path = tmp_path_factory.mktemp("tiny_llama")
    tok = train_tokenizer([f"the town of Avel{i} lies by the river {i}" for i in range(64)], 300, True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=128, tie_word_embeddings=False))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model.eval()
