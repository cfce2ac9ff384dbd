"""Pair backends over exported files: ONNX Runtime (``OnnxBackend``) and TensorRT (``TensorRTBackend``).

Both read the export's sidecar (``model.json`` beside the file) for preprocessing and classes,
check the file's checksum against it, and take and return torch tensors like ``TorchBackend``.
Their graphs are built for P >= 1 (``accepts_no_pairs = False``): ``HOIDetector`` gives a frame
batch without pairs one dummy pair instead of calling them with P = 0.

``TensorRTBackend`` was written against the TensorRT 10 Python API and has NOT been run: no
TensorRT or GPU was available.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from defr.export.onnx_export import INPUT_NAMES, OUTPUT_NAMES
from defr.export.sidecar import check_file, read_sidecar, runtime_meta
from defr.export.tensorrt_build import TENSORRT_INSTALL, TensorRTUnavailableError, import_tensorrt, load_plugin_library
from defr.runtime.detector import BackendError

ORT_INSTALL = "pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA and TensorRT execution providers)"


def _check_pairs(b: int, p: int, max_batch: int | None = None, max_pairs: int | None = None) -> None:
    if p < 1:
        raise BackendError("exported graphs need at least one pair per call (HOIDetector adds a dummy pair for P = 0)")
    if max_batch is not None and b > max_batch:
        raise BackendError(f"batch of {b} images exceeds the engine's max batch {max_batch} (export with --max-batch)")
    if max_pairs is not None and p > max_pairs:
        raise BackendError(f"{p} pairs exceed the engine's max pairs {max_pairs} (export with --max-pairs)")


class OnnxBackend:
    """An exported ``model.onnx`` or ``model.fp16.onnx`` run by ONNX Runtime.

    providers: execution providers in priority order, e.g. ``["CUDAExecutionProvider",
    "CPUExecutionProvider"]`` or ``TensorrtExecutionProvider``; None: every available one, in
    ONNX Runtime's order. threads: intra-op threads of the CPU provider (None: ONNX Runtime's
    default, one per physical core).
    """

    accepts_no_pairs = False
    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendError(f"ONNX Runtime is not available ({e}): {ORT_INSTALL}") from None
        path = Path(path)
        if not path.is_file():
            raise BackendError(f"{path}: no such ONNX file")
        sidecar = read_sidecar(path)
        self.precision = check_file(sidecar, path)["precision"]
        if sidecar["graph"]["plugin"]:
            raise BackendError(
                f"{path}: exported with --plugin (a defr::PairMaskedAttention node), which ONNX Runtime cannot run; "
                "export without --plugin"
            )
        available = ort.get_available_providers()
        providers = list(available if providers is None else providers)
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise BackendError(f"ONNX Runtime providers {unknown} are not available (available: {available})")
        self.meta = runtime_meta(sidecar)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=providers)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __call__(self, images, boxes_h, boxes_o, pair_index) -> tuple[torch.Tensor, torch.Tensor]:
        _check_pairs(images.shape[0], pair_index.shape[0])
        dtypes = (np.float32, np.float32, np.float32, np.int64)
        arrays = (images, boxes_h, boxes_o, pair_index)
        feeds = {n: x.detach().cpu().numpy().astype(t) for n, x, t in zip(INPUT_NAMES, arrays, dtypes, strict=True)}
        pair_logits, image_logits = self.session.run(list(OUTPUT_NAMES), feeds)
        return torch.from_numpy(pair_logits), torch.from_numpy(image_logits)


class TensorRTBackend:
    """A ``model.<precision>.engine`` built by ``defr-export --engine``, run on a CUDA device.

    Inputs are copied to the device; the engine reads and writes torch CUDA tensors directly
    (``set_tensor_address``) and runs on torch's current stream.
    """

    accepts_no_pairs = False
    name = "tensorrt"

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cuda"):
        try:
            trt = import_tensorrt()
        except TensorRTUnavailableError:
            raise BackendError(f"TensorRT is not available: {TENSORRT_INSTALL}") from None
        path = Path(path)
        if not path.is_file():
            raise BackendError(f"{path}: no such engine file")
        self.device = torch.device(device)
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise BackendError(
                f"TensorRT engines run on a CUDA device, not {self.device} (CUDA available: "
                f"{torch.cuda.is_available()})"
            )
        sidecar = read_sidecar(path)
        self.precision = check_file(sidecar, path)["precision"]
        self.meta = runtime_meta(sidecar)
        engine_info = sidecar.get("engine") or {}
        profile = engine_info.get("profile") or {}
        self.max_batch = profile["images"][2][0] if "images" in profile else None
        self.max_pairs = profile["pair_index"][2][0] if "pair_index" in profile else None
        logger = trt.Logger(trt.Logger.WARNING)
        if engine_info.get("plugin_library"):
            load_plugin_library(trt, logger, engine_info["plugin_library"])
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendError(f"{path}: TensorRT cannot load the engine (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.dtypes = {n: _torch_dtype(self.engine.get_tensor_dtype(n)) for n in (*INPUT_NAMES, *OUTPUT_NAMES)}

    def __call__(self, images, boxes_h, boxes_o, pair_index) -> tuple[torch.Tensor, torch.Tensor]:
        _check_pairs(images.shape[0], pair_index.shape[0], self.max_batch, self.max_pairs)
        inputs = {
            name: x.to(self.device, self.dtypes[name]).contiguous()
            for name, x in zip(INPUT_NAMES, (images, boxes_h, boxes_o, pair_index), strict=True)
        }
        for name, x in inputs.items():
            self.context.set_input_shape(name, tuple(x.shape))
            self.context.set_tensor_address(name, x.data_ptr())
        outputs = {
            name: torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name], device=self.device)
            for name in OUTPUT_NAMES
        }
        for name, y in outputs.items():
            self.context.set_tensor_address(name, y.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise BackendError("TensorRT execution failed (its log says why)")
        stream.synchronize()  # the inputs above are temporaries: keep them alive until the engine is done
        return outputs["pair_logits"].float(), outputs["image_logits"].float()


def _torch_dtype(trt_dtype) -> torch.dtype:
    dtypes = {"FLOAT": torch.float32, "HALF": torch.float16, "INT32": torch.int32, "INT64": torch.int64}
    if trt_dtype.name not in dtypes:
        raise BackendError(f"engine tensor of type {trt_dtype.name}: expected one of {sorted(dtypes)}")
    return dtypes[trt_dtype.name]
