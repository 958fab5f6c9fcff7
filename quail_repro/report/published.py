"""Published numbers (conf/published/*.yaml) and when ours may stand beside them: the same model,
the same data, and MUSE's evaluation settings (eval=muse, composed by Hydra)."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from quail_repro import CONF_DIR
from quail_repro.compose import compose_config
from quail_repro.report.table import Table
from quail_repro.results import MUSE_METRICS

PUBLISHED_DIR = CONF_DIR / "published"
#: eval settings that do not change a MUSE number (ignored when checking we evaluate as MUSE does;
#: utility adds lm-eval scores beside them)
EVAL_NEUTRAL = ("batch_size", "progress", "utility")


@dataclass(frozen=True)
class Published:
    key: str  # what report.published names it by
    source: str
    model: str
    dataset: str
    rows: dict[tuple[str, str], dict[str, float]]  # (method, precision) -> metric -> value


@functools.cache
def load_published() -> dict[str, Published]:
    """Every published table, by key."""
    out = {}
    for path in sorted(PUBLISHED_DIR.glob("*.yaml")):
        d = yaml.safe_load(path.read_text())
        rows = {(method, precision): dict(zip(d["columns"], values)) for method, precision, *values in d["rows"]}
        if d["key"] in out:
            raise ValueError(f"{path}: key {d['key']!r} is taken by another published table")
        out[d["key"]] = Published(d["key"], d["source"], d["model"], d["dataset"], rows)
    return out


def _comparable_eval(eval_cfg: DictConfig) -> dict[str, Any]:
    d = OmegaConf.to_container(eval_cfg, resolve=True)
    for k in EVAL_NEUTRAL:
        d.pop(k, None)
    d.get("decoding", {}).pop("seed", None)
    return d


@functools.cache
def _muse_eval() -> dict[str, Any]:
    return _comparable_eval(compose_config(["eval=muse"]).eval)


def published_for(config: DictConfig | None) -> tuple[Published | None, str]:
    """The published table a run with this config can be compared with, or None and why not."""
    if config is None:
        return None, "no config"
    for pub in load_published().values():
        if (config.model.name, config.dataset.name) == (pub.model, pub.dataset):
            if _comparable_eval(config.eval) != _muse_eval():
                return None, f"{config.model.name} on {config.dataset.name} but eval differs from eval=muse"
            return pub, ""
    return None, f"{config.model.name} on {config.dataset.name}"


def published_cells(pub: Published, method: str, precisions: list[str]) -> list[float | None]:
    """The published M1-M4 for each of ``precisions`` (labels: a "4-bit" column takes the
    published 4-bit numbers, whichever 4-bit quantizer it is)."""
    cells = []
    for label in precisions:
        values = pub.rows.get((method, label.split(" ")[0]))
        cells += [values[m.key] if values else None for m in MUSE_METRICS]
    return cells


def not_comparable_table(key: str, reasons: list[str]) -> Table:
    """A published table listed apart, with why no row of the sweep can stand beside it."""
    pub = load_published()[key]
    why = "; ".join(reasons) or "no run of this sweep used that setting"
    t = Table(f"published_{key}",
              f"{pub.source} published, {pub.model} on {pub.dataset}: NOT comparable to the rows above ({why})",
              [("", "method"), ("", "precision")] + [("", m.paper + m.better) for m in MUSE_METRICS],
              ["text", "text"] + ["num"] * len(MUSE_METRICS))
    for (method, precision), values in pub.rows.items():
        t.rows.append([method, precision] + [values[m.key] for m in MUSE_METRICS])
    return t
