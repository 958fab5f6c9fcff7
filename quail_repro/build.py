"""The one way components are built from config: Hydra ``_target_`` + instantiate."""
from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from quail_repro.errors import QuailError


def from_config(node: DictConfig, **run_time_args):
    """``hydra.utils.instantiate``, re-raising the harness's own errors instead of Hydra's wrapper.

    ``run_time_args`` are objects or values known only at run time (a base method, a margin).
    """
    try:
        return instantiate(node, **run_time_args)
    except InstantiationException as err:
        if isinstance(err.__cause__, QuailError):
            raise err.__cause__ from None
        raise
