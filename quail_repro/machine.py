"""Where a run's numbers were made. The CPU's kernel level (AVX2, AVX-512) and the number of
threads change the order of floating-point sums, so one config gives other numbers on another
machine or thread count (docs/results/numerics.md); results.json records them."""
from __future__ import annotations

import platform
from pathlib import Path

import torch


def _cpuinfo(field: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_vendor() -> str:
    """GenuineIntel, AuthenticAMD, ...: portable mode's bits differed between an Intel and an AMD CPU
    whose fingerprints agree (docs/results/numerics.md, sections 5-6), so numeric cache keys carry it.
    Not the family or model: two AMD generations (Zen 4, Zen 5) gave the same portable models."""
    return _cpuinfo("vendor_id") or platform.machine()


def describe() -> dict:
    """The CPU, the kernel level torch dispatches to on it, torch's thread count and version, and
    the GPU when there is one."""
    return {"cpu": cpu_name(), "cpu_vendor": cpu_vendor(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
