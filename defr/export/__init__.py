"""``defr-export``: DEFR's pair graph as ONNX (fp32, fp16), a sidecar, and a TensorRT engine.

Steps, one module each: ``onnx_export`` (the graph), ``fp16`` (the float16 variant), ``verify``
(onnx.checker, ONNX Runtime vs PyTorch), ``sidecar`` (``model.json``), ``tensorrt_build`` (the
engine); ``exporter`` runs them (``export_model``); ``cli`` is the command; ``errors`` holds
every error they raise; ``defaults`` the command's defaults.

The names below load on first use (PEP 562): the command must parse its options and take Ctrl-C
before torch and ONNX import, and importing ``defr.export.cli`` runs this file first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from defr.export.errors import CalibrationError, ExportError, VerificationError
    from defr.export.exporter import ExportConfig, ExportResult, export_model
    from defr.export.fp16 import convert_to_fp16
    from defr.export.onnx_export import export_onnx
    from defr.export.tensorrt_build import EngineConfig, optimization_profile_shapes
    from defr.export.verify import compare_with_torch
    from defr.runtime.sidecar import Sidecar, SidecarError, read_sidecar

_HOMES = {
    "CalibrationError": "defr.export.errors",
    "ExportError": "defr.export.errors",
    "VerificationError": "defr.export.errors",
    "ExportConfig": "defr.export.exporter",
    "ExportResult": "defr.export.exporter",
    "export_model": "defr.export.exporter",
    "convert_to_fp16": "defr.export.fp16",
    "export_onnx": "defr.export.onnx_export",
    "EngineConfig": "defr.export.tensorrt_build",
    "optimization_profile_shapes": "defr.export.tensorrt_build",
    "compare_with_torch": "defr.export.verify",
    "Sidecar": "defr.runtime.sidecar",
    "SidecarError": "defr.runtime.sidecar",
    "read_sidecar": "defr.runtime.sidecar",
}

__all__ = [
    "CalibrationError",
    "EngineConfig",
    "ExportConfig",
    "ExportError",
    "ExportResult",
    "Sidecar",
    "SidecarError",
    "VerificationError",
    "compare_with_torch",
    "convert_to_fp16",
    "export_model",
    "export_onnx",
    "optimization_profile_shapes",
    "read_sidecar",
]


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module 'defr.export' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
