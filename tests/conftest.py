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
