"""Pair backends: a ``defr.model.DEFR`` in PyTorch (``TorchBackend``) and an exported ONNX file in
ONNX Runtime (``OnnxBackend``). TensorRT engines: ``defr.runtime.tensorrt_backend``.

Every backend follows ``defr.runtime.contract.PairBackend``: it takes CPU tensors, places them on
its own device, and returns float32 logits. Exported backends read the export's sidecar
(``model.json`` beside the file) for preprocessing and classes and check the file's checksum.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path

import numpy as np
import torch

from defr.choices import DEFAULT_MASK_MODE, DEFAULT_PRECISION, TORCH_PRECISIONS, check_mask_mode
from defr.errors import ConfigError
from defr.model.pair_attention import ATTENTION_BACKENDS
from defr.runtime.contract import INPUT_NAMES, OUTPUT_NAMES, PRECISION_DTYPES, BackendError, RuntimeMeta
from defr.runtime.onnx_session import SessionConfig, make_session
from defr.runtime.sidecar import check_file, file_mask_mode, read_sidecar, runtime_meta
from defr.runtime.tensorrt_backend import check_pairs

ORT_INSTALL = "pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA and TensorRT execution providers)"


class TorchBackend:
    """A ``defr.model.DEFR`` as a pair backend: ``forward_pairs`` with image logits (accepts P = 0).

    precision: ``fp32``, or ``fp16`` / ``bf16`` through autocast on CUDA; on CPU ``bf16`` only.
    mask_mode: ``hard`` (the paper) or ``released`` (the released code's arithmetic). attention:
    the pair attention's implementation, ``auto`` (the Triton kernel on CUDA, the grouped PyTorch
    path on CPU), ``triton`` or ``reference`` (``defr.kernels``).
    """

    accepts_no_pairs = True
    name = "torch"

    def __init__(
        self,
        model,
        device: str | torch.device = "cpu",
        precision: str = DEFAULT_PRECISION,
        mask_mode: str = DEFAULT_MASK_MODE,
        attention: str = "auto",
    ):
        self.mask_mode = check_mask_mode(mask_mode)
        if attention not in ATTENTION_BACKENDS:
            raise ConfigError(f"attention must be one of {ATTENTION_BACKENDS}, not {attention!r}")
        self.attention = attention
        if precision not in TORCH_PRECISIONS:
            raise ConfigError(f"precision must be one of {TORCH_PRECISIONS}, not {precision!r}")
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

    providers: execution providers in priority order, e.g. ``["CUDAExecutionProvider",
    "CPUExecutionProvider"]`` or ``TensorrtExecutionProvider``; None: every available one, in
    ONNX Runtime's order. threads: intra-op threads of the CPU provider (None: ONNX Runtime's
    default, one per physical core). mask_mode: None takes the file's; another than the file's is
    refused (the mode is baked into the graph). session: the session options
    (``defr.runtime.onnx_session.SessionConfig``: optimisation level, the optimised-model cache next
    to the file, memory pattern, spinning); ``threads``, when given, overrides its ``threads``.
    ``precision`` is the file's (``fp32``, ``fp16`` or ``int8``, from the sidecar). Inputs are fed
    from the CPU; ``device`` is the CPU unless a GPU provider runs first.
    """

    accepts_no_pairs = False
    name = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike,
        providers: list[str] | None = None,
        threads: int | None = None,
        mask_mode: str | None = None,
        session: SessionConfig | None = None,
    ):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendError(f"ONNX Runtime is not available ({e}): {ORT_INSTALL}") from None
        path = Path(path)
        if not path.is_file():
            raise BackendError(f"{path}: no such ONNX file")
        sidecar = read_sidecar(path)
        entry = check_file(sidecar, path)
        self.precision = entry["precision"]
        self.mask_mode = file_mask_mode(sidecar, mask_mode, path)
        available = ort.get_available_providers()
        providers = list(available if providers is None else providers)
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise BackendError(f"ONNX Runtime providers {unknown} are not available (available: {available})")
        self.meta = runtime_meta(sidecar)
        session = session or SessionConfig()
        if threads is not None:
            session = dataclasses.replace(session, threads=threads)
        self.session = make_session(path, providers, session, file_sha256=entry["sha256"])
        self.device = feed_device(self.providers)

    @classmethod
    def from_session(cls, session, meta: RuntimeMeta, precision: str, mask_mode: str) -> OnnxBackend:
        """A backend over an open ``onnxruntime.InferenceSession`` of an exported graph that has no
        sidecar yet (the exporter's accuracy gate, before ``model.json`` is written)."""
        backend = cls.__new__(cls)
        backend.session, backend.meta = session, meta
        backend.precision, backend.mask_mode = precision, check_mask_mode(mask_mode)
        backend.device = feed_device(backend.providers)
        return backend

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
