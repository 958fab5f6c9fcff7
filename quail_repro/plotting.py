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


def plot_dw_histogram(histograms: dict[str, dict], path) -> Path:
    """One histogram of |dw|/Delta per label (analysis.dw_histogram) on a log-x axis, a line at 0.5
    (half a step), over the bins where some label has weights.

    Exact zeros cannot sit on a log axis; the legend gives their share instead.
    """
    plt = pyplot()
    lo, hi = next(iter(histograms.values()))["log10_range"] if histograms else (-8.0, 4.0)
    fig, ax = plt.subplots(figsize=(7, 4))
    used = [i for h in histograms.values() for i, c in enumerate(h["counts"]) if c]
    first, last = (min(used), max(used) + 1) if used else (0, 1)
    for label, h in histograms.items():
        counts = np.asarray(h["counts"], dtype=float)
        edges = np.logspace(lo, hi, len(counts) + 1)
        total = max(h["total"], 1)
        ax.stairs(counts[first:last] / total, edges[first:last + 1],
                  label=f"{label} ({h['zeros'] / total:.1%} unchanged)")
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
