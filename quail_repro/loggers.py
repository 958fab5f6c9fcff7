"""Where a run's config, per-stage metrics and results go besides results.json.

``logger=none`` uses NullLogger; experiment trackers implement the same three calls.
"""
from __future__ import annotations

from typing import Any


class NullLogger:
    def start(self, config: dict[str, Any], run_dir: str) -> None:
        pass

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        pass

    def finish(self, results: dict[str, Any]) -> None:
        pass
