"""The project's Hydra config composed from code: ``compose_config(["eval=muse"])``.

Works outside a Hydra app (a script, a test, ``python -m quail_repro.report``) and inside a
running one (a job, a sweep callback), where Hydra is already initialized and may not be
initialized again.
"""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from quail_repro import CONF_DIR


def compose_config(overrides: list[str]) -> DictConfig:
    """conf/config.yaml with ``overrides``, as Hydra composes it (without the ``hydra`` node)."""
    hydra = GlobalHydra.instance()
    if not hydra.is_initialized():
        # initialize_config_dir leaves Hydra uninitialized again on exit
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    if not _searches(hydra, CONF_DIR):
        # composing "config" here would read another tree's config.yaml
        raise RuntimeError(f"Hydra is running with another config tree; {CONF_DIR} is not on its search path")
    # the running app's own loader: its state (job, sweep, HydraConfig) is left as it is
    return compose(config_name="config", overrides=overrides)


def _searches(hydra: GlobalHydra, conf_dir: Path) -> bool:
    return any(s.scheme() == "file" and Path(s.path).resolve() == conf_dir.resolve()
               for s in hydra.config_loader().get_sources())
