"""The project's one matplotlib setup: figures are drawn off screen (Agg) and saved to files."""
from __future__ import annotations


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed: runs on headless machines and in jobs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
