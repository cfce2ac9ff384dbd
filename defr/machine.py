"""What a measurement ran on: CPU, cores, threads, GPU, package versions (for benchmark JSON and exports)."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

import torch

from defr.errors import ConfigError

PACKAGES = ("defr", "torch", "triton", "onnx", "onnxscript", "onnxruntime", "openvino", "tensorrt")


SEED_MAX = 2**32 - 1  # seeds are numpy's: [0, 2**32 - 1]


def check_device(name: str, allow_auto: bool = False) -> str:
    """``name`` if it is a device this machine has: ``cpu``, ``cuda`` / ``cuda:N`` with CUDA present (``auto``
    too when ``allow_auto``); ConfigError naming the value otherwise, before anything is built on it."""
    if allow_auto and name == "auto":
        return name
    forms = "cpu, cuda, cuda:N" + (", auto" if allow_auto else "")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device {name!r} is not a device ({forms})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r}: CUDA is not available on this machine (use cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise ConfigError(f"device {name!r} is not supported ({forms})")
    return name


def check_seed(seed: int, name: str = "seed") -> int:
    """``seed`` if it is an int in [0, ``SEED_MAX``]; ConfigError naming it otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"{name} must be an integer in [0, 2**32 - 1], got {seed!r}")
    return seed


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None: not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_has_int8_dot_product() -> bool:
    """Whether the CPU has an int8 dot-product instruction (AVX-512 VNNI, AVX-VNNI or AMX int8): without one,
    ONNX Runtime's u8 × s8 kernels (AVX2 ``vpmaddubsw``) saturate 16-bit sums with full 8-bit weights."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return True  # not Linux: assume a current CPU; the export's sanity check still guards the file
    flags = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "").split()
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


def machine_info(device: str | torch.device = "cpu") -> dict:
    """CPU, cores, PyTorch threads, platform, Python, package versions; and the GPU, driver and CUDA on CUDA."""
    info = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": package_versions(),
    }
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
        info["driver"] = _nvidia_driver()
    return info


def _nvidia_driver() -> str | None:
    version = Path("/proc/driver/nvidia/version")
    if not version.is_file():
        return None
    first = version.read_text().splitlines()[0]
    words = [w for w in first.split() if w[:1].isdigit() and "." in w]
    return words[0] if words else first
