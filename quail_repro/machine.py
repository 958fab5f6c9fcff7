"""Where a run's numbers were made. The CPU's kernel level (AVX2, AVX-512) and the number of
threads change the order of floating-point sums, so one config gives other numbers on another
machine or thread count (docs/results/numerics.md); results.json records them."""
from __future__ import annotations

import platform
from pathlib import Path

import torch


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict:
    """The CPU, the kernel level torch dispatches to on it, torch's thread count and version, and
    the GPU when there is one."""
    return {"cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
