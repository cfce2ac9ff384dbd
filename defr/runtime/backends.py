"""Pair backends: a ``defr.model.DEFR`` in PyTorch (``TorchBackend``) and an exported ONNX file in
ONNX Runtime (``OnnxBackend``; TensorRT engines: ``defr.runtime.tensorrt_backend``), and
``load_backend``, the one front door from a model file to a backend.

Every backend follows ``defr.runtime.contract.PairBackend``: it takes CPU tensors, places them on
its own device, and returns float32 logits. Exported backends are built from an opened session or
engine and the export's ``Sidecar``; their ``from_file`` does the I/O: it reads the sidecar
(``model.json`` beside the file) and checks the file's checksum before opening it.
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
from defr.model import load_model
from defr.model.pair_attention import ATTENTION_BACKENDS
from defr.optional import import_onnxruntime
from defr.runtime.contract import INPUT_NAMES, OUTPUT_NAMES, PRECISION_DTYPES, BackendError, PairBackend, RuntimeMeta
from defr.runtime.onnx_session import CPU_PROVIDERS, SessionConfig, make_session
from defr.runtime.sidecar import Sidecar, read_sidecar
from defr.runtime.tensorrt_backend import TensorRTBackend, check_pairs


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

    Built from an open ``onnxruntime.InferenceSession`` of the graph, the export's ``Sidecar``
    (preprocessing, classes, the baked-in mask mode) and the file's ``precision`` (``fp32``,
    ``fp16`` or ``int8``); ``OnnxBackend.from_file`` opens an exported file (checked against its
    sidecar). Inputs are fed from the CPU; ``device`` is the CPU unless a GPU provider runs first.
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
    def from_file(
        cls,
        path: str | os.PathLike,
        providers: list[str] | None = None,
        threads: int | None = None,
        mask_mode: str | None = None,
        session: SessionConfig | None = None,
    ) -> OnnxBackend:
        """Open an exported ONNX file after checking it (and its external data) against ``model.json`` beside it.

        providers: execution providers in priority order, e.g. ``["CUDAExecutionProvider",
        "CPUExecutionProvider"]`` or ``TensorrtExecutionProvider``; None: every available one, in
        ONNX Runtime's order. threads: intra-op threads of the CPU provider (None: ONNX Runtime's
        default, one per physical core). mask_mode: None takes the file's; another than the file's is
        refused (the mode is baked into the graph). session: the session options
        (``defr.runtime.onnx_session.SessionConfig``: optimisation level, the optimised-model cache
        next to the file, memory pattern, spinning); ``threads``, when given, overrides its ``threads``.

        Raises ``MissingDependency`` without ONNX Runtime, ``BackendError`` for a missing file or an
        unknown provider, ``SidecarError`` for a sidecar that is missing, malformed, or disagrees.
        """
        ort = import_onnxruntime()
        path = Path(path)
        if not path.is_file():
            raise BackendError(f"{path}: no such ONNX file")
        sidecar = read_sidecar(path)
        entry = sidecar.check_file(path)
        sidecar.mask_mode(mask_mode, path)
        available = ort.get_available_providers()
        providers = list(available if providers is None else providers)
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise BackendError(f"ONNX Runtime providers {unknown} are not available (available: {available})")
        session = session or SessionConfig()
        if threads is not None:
            session = dataclasses.replace(session, threads=threads)
        return cls(make_session(path, providers, session, file_sha256=entry.sha256), sidecar, entry.precision)

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


EXPORTED_SUFFIXES = {".onnx": "onnxruntime", ".engine": "tensorrt"}  # anything else: a checkpoint


def onnx_providers(device: str | torch.device) -> list[str] | None:
    """The ONNX Runtime providers for ``device``: the CPU provider alone for the CPU, else every
    available one in ONNX Runtime's order (a GPU provider first when installed)."""
    return list(CPU_PROVIDERS) if torch.device(device).type == "cpu" else None


def load_backend(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    *,
    precision: str | None = None,
    mask_mode: str | None = None,
    attention: str | None = None,
    threads: int | None = None,
    image_size: int | None = None,
    session: SessionConfig | None = None,
) -> PairBackend:
    """The pair backend of a model file, by suffix: ``.onnx`` (ONNX Runtime), ``.engine`` (TensorRT),
    anything else a checkpoint (ours or the released ``.pth``, in PyTorch).

    device: where it computes (ONNX Runtime: the CPU provider alone for ``cpu``, else every
    available provider; engines need CUDA). precision, attention, image_size: for checkpoints
    (defaults fp32, auto, the file's size); exported files keep their own, and asking for another is
    a ``ConfigError``. mask_mode: None = ``hard`` for checkpoints, the file's for exports (another
    than the file's is refused). threads: ONNX Runtime's intra-op threads; session: its session
    options (``OnnxBackend.from_file``).
    """
    suffix = Path(path).suffix.lower()
    if suffix in EXPORTED_SUFFIXES:
        if precision not in (None, "fp32"):
            raise ConfigError(f"{path}: precision applies to checkpoints; an exported model keeps its own")
        if attention not in (None, "auto"):
            raise ConfigError(f"{path}: attention applies to checkpoints; an exported model has its own graph")
        if image_size is not None:
            raise ConfigError(f"{path}: image size applies to checkpoints; an exported model has its own input size")
        if suffix == ".onnx":
            return OnnxBackend.from_file(path, onnx_providers(device), threads, mask_mode, session)
        return TensorRTBackend.from_file(path, device, mask_mode)
    model = load_model(path, image_size)
    return TorchBackend(model, device, precision or "fp32", mask_mode or "hard", attention or "auto")
