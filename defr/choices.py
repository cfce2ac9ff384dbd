"""The registry of choices: every named option the library offers (mask modes, precisions) and its
default, in one place. Validation, the click options and the docs read these tuples; nothing else in
``defr`` spells the names out as a list or as a default. A leaf: it imports only ``defr.errors``.

- **Mask modes** (``MaskMode``): how a pair's boxes bias the CLS attention of the last block
  (``defr.kernels.spec``): ``hard`` (the paper, the default: −inf outside the boxes) or ``released``
  (the released code's arithmetic: +1 outside, nothing masked). A checkpoint runs in any mode; an
  exported graph has its mode baked in (``resolve_mask_mode``).
- **Precisions** (``Precision``): one vocabulary for the compute dtype of every backend and file:
  ``fp32``, ``fp16``, ``bf16`` (PyTorch autocast, OpenVINO's hint) and ``int8`` (quantized ONNX); the
  sidecar records each exported file's precision in it. A request is a ``Precision`` or
  ``FILE_PRECISION`` ("the file's own": a checkpoint's is ``DEFAULT_PRECISION``); which precisions a
  runtime runs a file of a given precision at is its row in ``defr.runtime.registry``.
- **Quantizers** (``Quantizer``, ``defr-export --quantizer``): whose int8 file: ``ort`` (ONNX Runtime's
  quantizer, ``model.int8.onnx``, the default) or ``nncf`` (OpenVINO's NNCF, ``model.int8.nncf.onnx``).

Each ``check_*`` is the one check of its choice, called where a record holding it is built; its
message is the one every entry point prints.
"""

from __future__ import annotations

from typing import Literal, get_args

from defr.errors import ConfigError

MaskMode = Literal["hard", "released"]
MASK_MODES: tuple[MaskMode, ...] = get_args(MaskMode)
DEFAULT_MASK_MODE: MaskMode = "hard"

Precision = Literal["fp32", "fp16", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
DEFAULT_PRECISION: Precision = "fp32"
TORCH_PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "bf16")  # a checkpoint under torch.autocast
ENGINE_PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16")  # TensorRT engines defr-export builds
FILE_PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")  # exported ONNX files (the sidecar's record)
FilePrecision = Literal["file"]
FILE_PRECISION: FilePrecision = "file"  # a request for the model file's own precision
PrecisionRequest = Precision | FilePrecision
PRECISION_REQUESTS: tuple[PrecisionRequest, ...] = (FILE_PRECISION, *PRECISIONS)

Quantizer = Literal["ort", "nncf"]
QUANTIZERS: tuple[Quantizer, ...] = get_args(Quantizer)
DEFAULT_QUANTIZER: Quantizer = "ort"

# What each runtime runs a file of a given precision at (file precision → run precisions): the
# ``runs`` of the rows of ``defr.runtime.registry.RUNTIMES``. A checkpoint's weights are fp32.
RunsAt = dict[Precision, tuple[Precision, ...]]
TORCH_RUNS: RunsAt = {DEFAULT_PRECISION: TORCH_PRECISIONS}  # PyTorch, under torch.autocast
ONNX_RUNTIME_RUNS: RunsAt = {p: (p,) for p in FILE_PRECISIONS}  # the file as it is
OPENVINO_RUNS: RunsAt = {"fp32": ("fp32", "bf16"), "int8": ("int8",)}  # bf16: its inference-precision hint
TENSORRT_RUNS: RunsAt = {p: (p,) for p in ENGINE_PRECISIONS}  # the engine as it was built


def check_mask_mode(mask_mode: object) -> MaskMode:
    """``mask_mode`` if it is one of ``MASK_MODES``; else a ``ConfigError`` naming the choices."""
    if mask_mode not in MASK_MODES:
        raise ConfigError(f"mask_mode must be one of {MASK_MODES}, not {mask_mode!r}")
    return mask_mode


def check_precision(precision: object) -> PrecisionRequest:
    """``precision`` if it is ``FILE_PRECISION`` or one of ``PRECISIONS``; else a ``ConfigError`` naming the choices."""
    if precision not in PRECISION_REQUESTS:
        raise ConfigError(f"precision must be one of {PRECISION_REQUESTS}, not {precision!r}")
    return precision


def resolve_mask_mode(baked: MaskMode | None, requested: MaskMode | None, where: object) -> MaskMode:
    """The mask mode to run: the one baked into an exported graph, else the one requested, else
    ``DEFAULT_MASK_MODE``; the one refusal of a request that differs from the graph's.

    baked: an exported graph's mode (its sidecar's), None for a checkpoint (it runs in any mode).
    requested: an already checked ``MaskMode``, None for "the file's". where: the file, named in the error.
    """
    if baked is None:
        return requested or DEFAULT_MASK_MODE
    if requested is not None and requested != baked:
        raise ConfigError(
            f"{where}: exported with mask_mode {baked!r}, not {requested!r}; the mode is part of the graph: "
            f"export again with --mask-mode {requested}"
        )
    return baked
