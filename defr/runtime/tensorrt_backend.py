"""TensorRT: importing it, and ``TensorRTBackend``, an engine built by ``defr-export --engine`` as a pair backend.

Written against the TensorRT 10 Python API and NOT run here: no TensorRT or GPU was available.
The pure-Python parts (the missing-package error, profile limits from the sidecar) are tested.
The engine reads and writes torch CUDA tensors directly (``set_tensor_address``) and runs on
torch's current stream.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from defr.errors import DefrError
from defr.runtime.contract import INPUT_NAMES, OUTPUT_NAMES, BackendError
from defr.runtime.sidecar import check_file, file_mask_mode, read_sidecar, runtime_meta

TENSORRT_INSTALL = "pip install tensorrt (TensorRT 10, needs an NVIDIA GPU with CUDA 12)"


class TensorRTUnavailableError(DefrError, ImportError):
    """The ``tensorrt`` package cannot be imported."""


def import_tensorrt():
    """The ``tensorrt`` module; ``TensorRTUnavailableError`` naming the package and how to install it."""
    try:
        import tensorrt
    except ImportError as e:
        raise TensorRTUnavailableError(f"TensorRT is not available ({e}): {TENSORRT_INSTALL}") from None
    return tensorrt


def load_plugin_library(trt, logger, path: str | os.PathLike) -> None:
    """Register TensorRT's own plugins and those of the shared library at ``path``."""
    trt.init_libnvinfer_plugins(logger, "")
    trt.get_plugin_registry().load_library(str(path))


def register_builtin_plugin() -> None:
    """Register the built-in ``defr::PairMaskedAttention`` plugin before deserializing an engine that
    uses it. Its AOT kernel is inside the engine, so when the registration cannot run here (no
    Triton) the engine may still load; TensorRT then says what is missing."""
    try:
        from defr.kernels.tensorrt_plugin import register_plugin

        register_plugin(aot=True)
    except (DefrError, ImportError):
        pass


def check_pairs(batch: int, pairs: int, max_batch: int | None = None, max_pairs: int | None = None) -> None:
    """BackendError when a call is outside what an exported graph or engine accepts."""
    if pairs < 1:
        raise BackendError("exported graphs need at least one pair per call (HOIDetector adds a dummy pair for P = 0)")
    if max_batch is not None and batch > max_batch:
        raise BackendError(f"batch of {batch} images exceeds the engine's max batch {max_batch} (see --max-batch)")
    if max_pairs is not None and pairs > max_pairs:
        raise BackendError(f"{pairs} pairs exceed the engine's max pairs {max_pairs} (export with --max-pairs)")


class TensorRTBackend:
    """A ``model.<precision>.engine`` built by ``defr-export --engine``, run on a CUDA ``device``.

    mask_mode: None takes the engine's; another than the engine's is refused.
    """

    accepts_no_pairs = False
    name = "tensorrt"

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cuda", mask_mode: str | None = None):
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
        self.mask_mode = file_mask_mode(sidecar, mask_mode, path)
        self.meta = runtime_meta(sidecar)
        engine_info = sidecar.get("engine") or {}
        profile = engine_info.get("profile") or {}
        self.max_batch = profile["images"][2][0] if "images" in profile else None
        self.max_pairs = profile["pair_index"][2][0] if "pair_index" in profile else None
        logger = trt.Logger(trt.Logger.WARNING)
        if engine_info.get("plugin_library"):
            load_plugin_library(trt, logger, engine_info["plugin_library"])
        elif engine_info.get("plugin") == "qdp-aot":
            register_builtin_plugin()
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendError(f"{path}: TensorRT cannot load the engine (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.dtypes = {n: _torch_dtype(self.engine.get_tensor_dtype(n)) for n in (*INPUT_NAMES, *OUTPUT_NAMES)}

    def __call__(self, images, boxes_h, boxes_o, pair_index) -> tuple[torch.Tensor, torch.Tensor]:
        check_pairs(images.shape[0], pair_index.shape[0], self.max_batch, self.max_pairs)
        with torch.cuda.device(self.device):
            inputs = {
                name: x.to(self.device, self.dtypes[name]).contiguous()
                for name, x in zip(INPUT_NAMES, (images, boxes_h, boxes_o, pair_index), strict=True)
            }
            for name, x in inputs.items():
                self.context.set_input_shape(name, tuple(x.shape))
                self.context.set_tensor_address(name, x.data_ptr())
            shapes = {name: tuple(self.context.get_tensor_shape(name)) for name in OUTPUT_NAMES}
            outputs = {n: torch.empty(s, dtype=self.dtypes[n], device=self.device) for n, s in shapes.items()}
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
