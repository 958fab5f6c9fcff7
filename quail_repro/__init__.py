"""quail_repro: a harness for machine unlearning under quantization."""
from pathlib import Path

#: the Hydra config tree (conf/ at the repository root)
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
