"""Pair backends: a ``defr.model.DEFR`` in PyTorch (``TorchBackend``) and an exported ONNX file in
ONNX Runtime (``OnnxBackend``; OpenVINO and TensorRT: ``openvino_backend``, ``tensorrt_backend``).
The front door from a model file to a backend is ``defr.runtime.registry.load_backend``.

Every backend follows ``defr.runtime.contract.PairBackend``: it takes CPU tensors, places them on
its own device, and returns float32 logits. Exported backends are built from an opened session or
engine and the export's ``Sidecar``; their ``open`` opens the file the door has checked against its
sidecar, with the precision the door resolved: no option parsing, no file discovery.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

from defr.choices import DEFAULT_MASK_MODE, DEFAULT_PRECISION, MaskMode, Precision
from defr.errors import ConfigError
from defr.model.pair_attention import ATTENTION_BACKENDS
from defr.optional import import_onnxruntime
from defr.runtime.contract import INPUT_NAMES, OUTPUT_NAMES, PRECISION_DTYPES, BackendError, RuntimeMeta
from defr.runtime.onnx_session import CPU_PROVIDERS, SessionConfig, make_session
from defr.runtime.sidecar import Sidecar
from defr.runtime.tensorrt_backend import check_pairs

DEFAULT_ATTENTION = ATTENTION_BACKENDS[0]  # auto: the Triton kernel on CUDA, the grouped PyTorch path elsewhere


class TorchBackend:
    """A ``defr.model.DEFR`` as a pair backend: ``forward_pairs`` with image logits (accepts P = 0).

    precision: ``fp32``, or ``fp16`` / ``bf16`` through autocast on CUDA; on CPU ``bf16`` only.
    mask_mode: ``hard`` (the paper) or ``released`` (the released code's arithmetic). attention:
    the pair attention's implementation, ``auto`` (the Triton kernel on CUDA, the grouped PyTorch
    path on CPU), ``triton`` or ``reference`` (``defr.kernels``). The values are checked where they
    were chosen (``defr.runtime.registry.ModelOptions``); build one with ``load_backend`` or, for a
    model in memory, ``defr.runtime.registry.torch_backend``.
    """

    accepts_no_pairs = True
    name = "torch"

    def __init__(
        self,
        model,
        device: str | torch.device = "cpu",
        precision: Precision = DEFAULT_PRECISION,
        mask_mode: MaskMode = DEFAULT_MASK_MODE,
        attention: str = DEFAULT_ATTENTION,
    ):
        self.mask_mode = mask_mode
        self.attention = attention
        self.device = torch.device(device)
        if precision == "fp16" and self.device.type == "cpu":
            raise ConfigError("precision 'fp16' needs a CUDA device; on CPU use 'fp32' or 'bf16'")
        self.model = model.to(self.device).eval()
        self.precision = precision
        self.meta = RuntimeMeta.from_model(model)

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=PRECISION_DTYPES[self.precision])

    @torch.no_grad()
    def __call__(self, images, boxes_h, boxes_o, pair_index):
        with self._autocast():
            pairs, image = self.model.forward_pairs(
                images.to(self.device),
                boxes_h.to(self.device),
                boxes_o.to(self.device),
                pair_index.to(self.device),
                with_image_logits=True,
                mask_mode=self.mask_mode,
                attention=self.attention,
            )
        return pairs.float(), image.float()


CUDA_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def feed_device(providers: list[str]) -> torch.device:
    """Where the runtime prepares an ONNX Runtime session's inputs: CUDA when the session's first
    provider runs on an NVIDIA GPU, else the CPU. Not "anything but the CPU provider": ONNX Runtime
    can list providers that run nothing on a GPU first (``AzureExecutionProvider``)."""
    return torch.device("cuda" if providers and providers[0] in CUDA_PROVIDERS else "cpu")


class OnnxBackend:
    """An exported ``model.onnx``, ``model.fp16.onnx`` or ``model.int8.onnx`` run by ONNX Runtime.

    Built from an open ``onnxruntime.InferenceSession`` of the graph, the export's ``Sidecar``
    (preprocessing, classes, the baked-in mask mode) and the file's ``precision`` (``fp32``,
    ``fp16`` or ``int8``); ``OnnxBackend.open`` opens an exported file the front door has checked
    against its sidecar. Inputs are fed from the CPU; ``device`` is the CPU unless a GPU provider runs first.
    """

    accepts_no_pairs = False
    name = "onnxruntime"

    def __init__(self, session, sidecar: Sidecar, precision: str):
        self.session = session
        self.sidecar = sidecar
        self.meta = sidecar.meta
        self.mask_mode = sidecar.graph.mask_mode
        self.precision = precision
        self.device = feed_device(self.providers)

    @classmethod
    def open(
        cls,
        path: os.PathLike,
        sidecar: Sidecar,
        sha256: str,
        precision: Precision,
        providers: list[str] | None,
        session: SessionConfig,
    ) -> OnnxBackend:
        """An ONNX Runtime session of ``path`` (checked against ``sidecar`` by the door: its SHA-256 is
        ``sha256``). providers: execution providers in priority order (None: every available one, in
        ONNX Runtime's order); session: the session options (``SessionConfig``). BackendError for an
        unknown provider."""
        ort = import_onnxruntime()
        available = ort.get_available_providers()
        providers = list(available if providers is None else providers)
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise BackendError(f"ONNX Runtime providers {unknown} are not available (available: {available})")
        return cls(make_session(path, providers, session, file_sha256=sha256), sidecar, precision)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __call__(self, images, boxes_h, boxes_o, pair_index) -> tuple[torch.Tensor, torch.Tensor]:
        check_pairs(images.shape[0], pair_index.shape[0])
        dtypes = (np.float32, np.float32, np.float32, np.int64)
        arrays = (images, boxes_h, boxes_o, pair_index)
        feeds = {n: x.detach().cpu().numpy().astype(t) for n, x, t in zip(INPUT_NAMES, arrays, dtypes, strict=True)}
        pair_logits, image_logits = self.session.run(list(OUTPUT_NAMES), feeds)
        return torch.from_numpy(pair_logits), torch.from_numpy(image_logits)


def onnx_providers(device: str | torch.device) -> list[str] | None:
    """The ONNX Runtime providers for ``device``: the CPU provider alone for the CPU, else every
    available one in ONNX Runtime's order (a GPU provider first when installed)."""
    return list(CPU_PROVIDERS) if torch.device(device).type == "cpu" else None
