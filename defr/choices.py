"""The registry of choices: every named option the library offers (mask modes, precisions) and its
default, in one place. Validation, ``click.Choice`` and the docs read these tuples; nothing else in
``defr`` spells the names out as a list or as a default. A leaf: it imports only ``defr.errors``.

- **Mask modes** (``MaskMode``): how a pair's boxes bias the CLS attention of the last block
  (``defr.kernels.spec``): ``hard`` (the paper, the default: −inf outside the boxes) or ``released``
  (the released code's arithmetic: +1 outside, nothing masked). A checkpoint runs in any mode; an
  exported graph has its mode baked in (``resolve_mask_mode``).
- **Precisions** (``Precision``): one vocabulary for the compute dtype of every backend and file:
  ``fp32``, ``fp16``, ``bf16`` (PyTorch autocast) and ``int8`` (quantized ONNX); the sidecar records
  each exported file's precision in it. Each place that takes a precision accepts the subset below
  that it can run.
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
OPENVINO_FILE_PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")  # the exported files OpenVINO runs on a CPU


def check_mask_mode(mask_mode: str) -> MaskMode:
    """``mask_mode`` if it is one of ``MASK_MODES``; else a ``ConfigError`` naming the choices."""
    if mask_mode not in MASK_MODES:
        raise ConfigError(f"mask_mode must be one of {MASK_MODES}, not {mask_mode!r}")
    return mask_mode


def resolve_mask_mode(
    file_mode: str | None, requested: str | None, where: object, mismatch: type[Exception] = ConfigError
) -> MaskMode:
    """The mask mode to run: the file's own, else the one requested, else ``DEFAULT_MASK_MODE``.

    file_mode: the mode baked into an exported graph (its sidecar's; an export made before mask
    modes existed passes ``DEFAULT_MASK_MODE``), None for a checkpoint (it runs in any mode).
    requested: the caller's choice, None for "no preference". where: the file, named in errors.
    Raises ``ConfigError`` for a requested mode that does not exist, and ``mismatch`` (a class
    taking one message) when an exported graph was baked with another mode than the one requested.
    """
    if requested is not None:
        check_mask_mode(requested)
    if file_mode is None:
        return requested or DEFAULT_MASK_MODE
    if requested is not None and requested != file_mode:
        raise mismatch(
            f"{where}: exported with mask_mode {file_mode!r}, not {requested!r}; the mode is part of the graph: "
            f"export again with --mask-mode {requested}"
        )
    return file_mode
