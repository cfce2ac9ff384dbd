"""Optional packages, imported where used behind one helper each (a leaf).

A missing package raises ``MissingDependency`` (a ``DefrError`` and an ``ImportError``) in one
form: what needs it, the package, why the import failed, and the exact install command naming
``defr``'s extra. Nothing is ever installed from here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from defr.errors import DefrError

TENSORRT_WORDS = "TensorRT 10.x and 11.x; needs an NVIDIA GPU with CUDA 12"


class MissingDependency(DefrError, ImportError):
    """An optional package that a feature needs is not installed (or does not import)."""


def install_command(extra: str | None, package: str) -> str:
    """``pip install "defr[extra]"`` for a package of one of defr's extras, else ``pip install package``."""
    return f'pip install "defr[{extra}]"' if extra else f"pip install {package}"


def require(module: str, what: str, extra: str | None, package: str | None = None) -> ModuleType:
    """Import ``module`` for ``what`` (e.g. "ONNX export"); MissingDependency naming the package and the
    install command of ``extra`` (or of ``package`` alone when it is no extra of defr's)."""
    package = package or module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependency(
            f"{what} needs the Python package {package!r} ({e}); {install_command(extra, package)}"
        ) from None


def import_onnxruntime(what: str = "ONNX Runtime inference") -> ModuleType:
    return require("onnxruntime", what, "export")


def import_onnxscript(what: str = "ONNX export (torch.onnx, dynamo)") -> ModuleType:
    return require("onnxscript", what, "export")


def import_tensorrt(what: str = f"TensorRT ({TENSORRT_WORDS})") -> ModuleType:
    return require("tensorrt", what, "gpu")


def import_triton(what: str = "the Triton pair-attention kernel") -> ModuleType:
    return require("triton", what, None)


def import_av(what: str = "reading and writing video files") -> ModuleType:
    return require("av", what, "video")


def import_supervision(what: str = "tracking and supervision detections") -> ModuleType:
    return require("supervision", what, "video")


def import_trackers(what: str = "tracking (ByteTrack)") -> ModuleType:
    return require("trackers", what, "video")


def import_ultralytics(what: str = "an ultralytics:WEIGHTS detector") -> ModuleType:
    return require("ultralytics", what, None)


def import_ray(what: str = "Ray (serving and --ray batch jobs)") -> ModuleType:
    return require("ray", what, "serve")


def import_ray_serve(what: str = "defr serve (Ray Serve)") -> ModuleType:
    return require("ray.serve", what, "serve", package="ray[serve]")


def import_openvino(what: str = "the OpenVINO runtime") -> ModuleType:
    return require("openvino", what, "openvino")
