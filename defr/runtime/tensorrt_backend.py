"""``TensorRTBackend``: an engine built by ``defr-export --engine`` as a pair backend (TensorRT 10.x and 11.x).

Written against the TensorRT Python API and NOT run here: no TensorRT or GPU was available. The
pure-Python parts (the missing-package error, profile limits from the sidecar) are tested.
The engine reads and writes torch CUDA tensors directly (``set_tensor_address``) and runs on
torch's current stream. TensorRT is imported through ``defr.optional``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from defr.errors import DefrError
from defr.optional import import_tensorrt
from defr.runtime.contract import INPUT_NAMES, OUTPUT_NAMES, BackendError
from defr.runtime.sidecar import Sidecar


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

    Built from a deserialized engine, the export's ``Sidecar`` (preprocessing, classes, the profile's
    limits, the baked-in mask mode) and the file's ``precision``; ``TensorRTBackend.open`` deserializes
    an engine file the front door (``defr.runtime.registry.load_backend``) checked against its sidecar.
    """

    accepts_no_pairs = False
    name = "tensorrt"

    def __init__(self, engine, sidecar: Sidecar, precision: str, device: str | torch.device = "cuda"):
        if sidecar.engine is None:
            raise BackendError("the export's model.json records no engine")
        self.engine = engine
        self.sidecar = sidecar
        self.meta = sidecar.meta
        self.mask_mode = sidecar.graph.mask_mode
        self.precision = precision
        self.device = torch.device(device)
        self.max_batch = sidecar.engine.max_batch
        self.max_pairs = sidecar.engine.max_pairs
        self.context = engine.create_execution_context()
        self.dtypes = {n: _torch_dtype(engine.get_tensor_dtype(n)) for n in (*INPUT_NAMES, *OUTPUT_NAMES)}

    @classmethod
    def open(
        cls, path: str | os.PathLike, sidecar: Sidecar, precision: str, device: str | torch.device
    ) -> TensorRTBackend:
        """Deserialize the engine ``path`` on CUDA ``device``; the plugin the sidecar names (built in
        or a library) is registered first. Raises ``BackendError`` without CUDA, for an engine the
        sidecar does not record, or one TensorRT cannot load."""
        trt = import_tensorrt()
        path = Path(path)
        device = torch.device(device)
        if device.type != "cuda" or not torch.cuda.is_available():
            raise BackendError(
                f"TensorRT engines run on a CUDA device, not {device} (CUDA available: {torch.cuda.is_available()})"
            )
        if sidecar.engine is None or sidecar.engine.file != path.name:
            raise BackendError(f"{path}: model.json records no such engine (export again with --engine)")
        logger = trt.Logger(trt.Logger.WARNING)
        if sidecar.engine.plugin == "library":
            load_plugin_library(trt, logger, sidecar.engine.plugin_library)
        elif sidecar.engine.plugin == "qdp-aot":
            register_builtin_plugin()
        engine = trt.Runtime(logger).deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BackendError(f"{path}: TensorRT cannot load the engine (built by another TensorRT version or GPU?)")
        return cls(engine, sidecar, precision, device)

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
