"""``defr-export``: DEFR's pair graph as ONNX (fp32, fp16), a sidecar, and a TensorRT engine."""

from defr.export.cli import ExportConfig, ExportResult, export_and_check, export_model
from defr.export.fp16 import convert_to_fp16
from defr.export.onnx_export import ExportError, export_onnx
from defr.export.sidecar import SidecarError, read_sidecar, runtime_meta
from defr.export.tensorrt_build import EngineConfig, TensorRTUnavailableError, optimization_profile_shapes
from defr.export.verify import VerificationError, compare_with_torch

__all__ = [
    "EngineConfig",
    "ExportConfig",
    "ExportError",
    "ExportResult",
    "SidecarError",
    "TensorRTUnavailableError",
    "VerificationError",
    "compare_with_torch",
    "convert_to_fp16",
    "export_and_check",
    "export_model",
    "export_onnx",
    "optimization_profile_shapes",
    "read_sidecar",
    "runtime_meta",
]
