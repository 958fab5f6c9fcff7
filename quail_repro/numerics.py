"""The numeric environment a run computes in, and the portable mode that pins it.

Besides the config, three things change a CPU run's bits (measured: docs/results/numerics.md):
torch's kernel level (ATen's vector kernels: softmax, log, randn), MKL's code path (every matmul)
and the thread count (how a long sum is split). ``numerics=fast`` leaves them to the machine;
``numerics=portable`` pins them to what every x86-64 CPU has: ATen's scalar kernels, MKL's
COMPATIBLE path and a fixed number of threads (the same models on two AMD generations, not on an
Intel CPU: docs/results/numerics.md sections 5-6). Both the kernel level and MKL's path are fixed
at a process's first kernel, so :func:`apply` runs before any computation and checks it took effect.

Every numeric cache entry is keyed by :func:`environment` (cache.py): a machine never reuses an
entry that another CPU vendor, kernel level, MKL path, thread count, GPU or torch version computed.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
from functools import lru_cache
from pathlib import Path

import torch
from omegaconf import DictConfig

from hydra.utils import to_absolute_path

from quail_repro import machine
from quail_repro.cache import Cache
from quail_repro.errors import ConfigError, QuailError

#: MKL's conditional-numerical-reproducibility branches (mkl_cbwr_set / MKL_CBWR), by the names its
#: documentation uses; 1 (BRANCH_OFF) is what mkl_cbwr_get reports when nothing was set
MKL_BRANCHES = {"OFF": 1, "AUTO": 2, "COMPATIBLE": 3, "SSE2": 4, "SSE4_2": 8, "AVX": 9, "AVX2": 10,
                "AVX512": 12, "AVX512_E1": 14}
MKL_STRICT = 0x10000
CPU_CAPABILITIES = ("default", "avx2", "avx512")
CACHE_SCOPES = ("machine", "shared")


class NumericsError(QuailError):
    """The numeric environment a config asks for cannot be set up in this process."""


@lru_cache(maxsize=1)
def _mkl():
    """MKL's service functions, exported by torch's CPU library when it is built with MKL (None otherwise)."""
    if not torch.backends.mkl.is_available():
        return None
    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        get, put, version = lib.mkl_serv_cbwr_get, lib.mkl_serv_cbwr_set, lib.MKL_Get_Version_String
    except (OSError, AttributeError):
        return None
    get.restype = put.restype = ctypes.c_int
    buf = ctypes.create_string_buffer(256)
    version(buf, 256)
    return get, put, buf.value.decode()


def _blas_info() -> str:
    """The BLAS torch was built with, as its build settings name it (mkl, open, ...)."""
    return torch.__config__.show().split("BLAS_INFO=")[-1].split(",")[0]


def mkl_branch() -> str | None:
    """MKL's code path as MKL reports it (OFF: its own choice per CPU), None without MKL."""
    mkl = _mkl()
    if mkl is None:
        return None
    code = mkl[0](1)  # MKL_CBWR_BRANCH
    name = {v: k for k, v in MKL_BRANCHES.items()}.get(code & ~MKL_STRICT, str(code))
    return name + (",STRICT" if code & MKL_STRICT else "")


def _set_mkl_branch(branch: str) -> None:
    name, _, strict = branch.upper().partition(",")
    if name not in MKL_BRANCHES or strict not in ("", "STRICT"):
        raise ConfigError(f"numerics.blas_path={branch!r}: choose one of {sorted(MKL_BRANCHES)} (optionally ',STRICT')")
    mkl = _mkl()
    if mkl is None:
        raise NumericsError(f"numerics.blas_path={branch!r} pins MKL's code path, but this torch has no MKL "
                            f"(its BLAS: {_blas_info()}); "
                            "use numerics=fast, or a torch build with MKL (the x86-64 wheels)")
    code = MKL_BRANCHES[name] | (MKL_STRICT if strict else 0)
    if mkl[0](1) == code:
        return
    status = mkl[1](code)
    if status != 0 or mkl[0](1) != code:
        raise NumericsError(f"MKL refused code path {branch!r} (mkl_cbwr_set returned {status}; now "
                            f"{mkl_branch()}): MKL fixes its path at its first call, which came before this "
                            "run's. Set MKL_CBWR in the environment, or run one numerics mode per process")


def apply(n: DictConfig, device: str) -> None:
    """Pin what ``numerics`` (conf/numerics) pins, before this process computes anything."""
    if n.cache_scope not in CACHE_SCOPES:
        raise ConfigError(f"numerics.cache_scope={n.cache_scope!r}: choose one of {list(CACHE_SCOPES)}")
    if n.cpu_capability is not None:
        if n.cpu_capability not in CPU_CAPABILITIES:
            raise ConfigError(f"numerics.cpu_capability={n.cpu_capability!r}: choose one of "
                              f"{list(CPU_CAPABILITIES)} or null (the CPU's best)")
        os.environ["ATEN_CPU_CAPABILITY"] = n.cpu_capability  # read by torch at its first vector kernel
        actual = torch.backends.cpu.get_cpu_capability()
        if actual.lower() != n.cpu_capability:
            raise NumericsError(f"numerics.cpu_capability={n.cpu_capability} but torch already runs {actual} "
                                "kernels in this process (its level is fixed at the first kernel): set "
                                f"ATEN_CPU_CAPABILITY={n.cpu_capability} in the environment, or run one "
                                "numerics mode per process")
    if n.blas_path is not None:
        _set_mkl_branch(n.blas_path)
    if n.threads is not None:
        if int(n.threads) < 1:
            raise ConfigError(f"numerics.threads={n.threads}: a positive count, or null (torch's default)")
        torch.set_num_threads(int(n.threads))
    if n.deterministic and device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's reproducible workspaces
        torch.backends.cudnn.benchmark = False
    if torch.are_deterministic_algorithms_enabled() != bool(n.deterministic):  # setting it imports torch._dynamo (~1.5 s)
        torch.use_deterministic_algorithms(bool(n.deterministic))


def _pattern(n: int, device: str) -> torch.Tensor:
    """Values in [-0.5, 0.5) made by integer arithmetic and one correctly rounded division, so every
    machine starts from the same bits (and their sums round, so the order of a sum shows)."""
    i = torch.arange(n, dtype=torch.int64, device=device)
    return ((i * 2654435761) % 65521 - 32760).float() / 65521


def fingerprint(device: str) -> str:
    """A hash of a few computations whose bits depend on the kernel level, the BLAS path and the thread
    count (a matmul, a long sum, softmax and log, randn): two environments that differ in it compute
    different numbers, whatever their descriptions say."""
    a, b = _pattern(257 * 1031, device).view(257, 1031), _pattern(1031 * 263, device).view(1031, 263).flip(0)
    long = _pattern(1 << 20, device)
    outs = [a @ b, long.sum(), torch.softmax(a * 8, -1).log().sum(0),
            torch.randn(1000, generator=torch.Generator(device=device).manual_seed(0), device=device)]
    return hashlib.sha256(b"".join(o.cpu().numpy().tobytes() for o in outs)).hexdigest()[:16]


def environment(n: DictConfig, device: str) -> dict:
    """What the numeric cache keys carry: with ``cache_scope: machine`` the device kind, torch's version
    and everything on it that changes bits (the CPU's vendor and kernel level, MKL's path, threads; the GPU and
    CUDA), with the fingerprint that checks them; with ``shared`` the device kind only."""
    kind = device.split(":")[0]
    if n.cache_scope == "shared":
        return {"device_kind": kind, "scope": "shared"}
    env = {"device_kind": kind, "torch": torch.__version__, "deterministic": bool(n.deterministic)}
    if kind == "cuda":
        env |= {"gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version()}
    else:
        env |= {"cpu_vendor": machine.cpu_vendor(),  # portable mode's bits differ between vendors
                "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                "blas": {"mkl": _mkl()[2], "branch": mkl_branch()} if _mkl() else
                _blas_info()}
    env["fingerprint"] = fingerprint(device)
    return env


def open_cache(cfg: DictConfig) -> Cache:
    """The run's cache, keyed by this process's numeric environment (after :func:`apply`), its entries
    recording this machine as their builder."""
    return Cache(to_absolute_path(cfg.paths.cache), environment=environment(cfg.numerics, cfg.device),
                 provenance=machine.describe())
