"""The project's one matplotlib setup (figures drawn off screen, Agg, and saved to files), and the
bucket analysis's two figures (analysis.py computes what they show)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed: runs on headless machines and in jobs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path) -> Path:
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_dw_histogram(ratios: dict[str, Tensor], path) -> Path:
    """One histogram of |dw|/Delta per label on a log-x axis, a line at 0.5 (half a step).

    Exact zeros cannot sit on a log axis; the legend gives their share instead.
    """
    plt = pyplot()
    positive = {k: v.float().flatten()[v.flatten() > 0] for k, v in ratios.items()}
    present = [v for v in positive.values() if v.numel()]
    lo = min(float(v.min()) for v in present) if present else 1e-6
    hi = max(float(v.max()) for v in present) if present else 1.0
    log_lo, log_hi = float(np.log10(lo)), float(np.log10(max(hi, lo * 10)))
    edges = torch.logspace(log_lo, log_hi, 81)
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, v in ratios.items():
        # equal bins of log10 |dw|/Delta: histc on the logs (torch.histogram's search over 80 edges
        # took ~0.5 s per quantizer on 2.6M weights, most of a cached job's time)
        logs = positive[label].double().log10()
        counts = torch.histc(logs, bins=80, min=log_lo, max=log_hi) / max(v.numel(), 1)
        zeros = 1 - positive[label].numel() / max(v.numel(), 1)
        ax.stairs(counts.numpy(), edges.numpy(), label=f"{label} ({zeros:.1%} unchanged)")
    ax.axvline(0.5, color="k", linestyle="--", linewidth=1, label="half a step")
    ax.set(xscale="log", xlabel="|dw| / quantization step", ylabel="fraction of weights")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def plot_overlap_per_layer(per_layer: dict[str, dict[str, dict]], path) -> Path:
    """Bucket overlap per layer, one series per quantizer ({quantizer: {layer: {bucket_overlap, ...}}})."""
    plt = pyplot()
    layers = list(next(iter(per_layer.values()), {}))
    fig, ax = plt.subplots(figsize=(max(7, 0.18 * len(layers)), 4))
    for label, stats in per_layer.items():
        ax.plot(range(len(layers)), [stats[name]["bucket_overlap"] for name in layers], marker=".", label=label)
    short = [name.removeprefix("model.").removeprefix("layers.").removesuffix(".weight") for name in layers]
    ax.set_xticks(range(len(layers)), short, rotation=90, fontsize=6)
    ax.set(ylabel="bucket overlap (same code)")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)
