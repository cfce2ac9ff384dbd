"""``defr-export``: DEFR's pair graph as ONNX (fp32, fp16), a sidecar, and a TensorRT engine.

Steps, one module each: ``onnx_export`` (the graph), ``fp16`` (the float16 variant), ``verify``
(onnx.checker, ONNX Runtime vs PyTorch), ``sidecar`` (``model.json``), ``tensorrt_build`` (the
engine); ``exporter`` runs them (``export_model``); ``cli`` is the command; ``errors`` holds
every error they raise.
"""

from defr.export.errors import CalibrationError, ExportError, VerificationError
from defr.export.exporter import ExportConfig, ExportResult, export_model
from defr.export.fp16 import convert_to_fp16
from defr.export.onnx_export import export_onnx
from defr.export.tensorrt_build import EngineConfig, optimization_profile_shapes
from defr.export.verify import compare_with_torch
from defr.runtime.sidecar import Sidecar, SidecarError, read_sidecar

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
