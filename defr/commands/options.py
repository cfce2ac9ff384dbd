"""Click options shared by ``defr detect``, ``video``, ``bench``, ``box-noise`` and ``defr-export``.

Choices and defaults are read from the library (``defr.choices``, ``defr.kernels``), never retyped
here, so a new mode or precision reaches every command at once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from defr.choices import DEFAULT_MASK_MODE, DEFAULT_PRECISION, MASK_MODES, TORCH_PRECISIONS
from defr.kernels import ATTENTION_BACKENDS


def mask_mode_option(default: str | None = None, help: str | None = None) -> Callable:  # noqa: A002 (click's name)
    """``--mask-mode``, one of ``MASK_MODES``; default None: the file's own, else the library's default."""
    return click.option(
        "--mask-mode",
        type=click.Choice(MASK_MODES),
        default=default,
        show_default=default is not None,
        help=help
        or "How a pair's boxes mask the CLS attention: hard (the paper) or released (the released code's +1 bias). "
        f"A checkpoint runs in either (default {DEFAULT_MASK_MODE}); an exported file keeps its own.",
    )


MASK_MODE_OPTION = mask_mode_option()

ATTENTION_OPTION = click.option(
    "--attention",
    type=click.Choice(ATTENTION_BACKENDS),
    help="Pair attention of a checkpoint: auto (the Triton kernel on CUDA, the grouped PyTorch path on CPU; "
    "default), triton or reference.",
)

PRECISION_OPTION = click.option(
    "--precision",
    default=DEFAULT_PRECISION,
    show_default=True,
    type=click.Choice(TORCH_PRECISIONS),
    help="Compute precision of a checkpoint (fp16 needs CUDA); an exported model keeps its own.",
)

DEVICE_OPTION = click.option("--device", default="cpu", show_default=True, help="Torch device: cpu, cuda, cuda:1, ...")


def MODEL_FILE_OPTIONS(command: Callable) -> Callable:  # noqa: N802 (used as a decorator, like the others)
    """``--checkpoint CKPT`` or ``--model FILE`` (an exported ``.onnx`` / ``.engine``): give one."""
    command = click.option(
        "--model",
        "model_file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Alternative to --checkpoint: an exported model.onnx or model.engine.",
    )(command)
    return click.option(
        "--checkpoint", type=click.Path(dir_okay=False, path_type=Path), help="DEFR checkpoint (ours or .pth)."
    )(command)


def model_source(checkpoint: Path | None, model_file: Path | None, precision: str) -> tuple[Path, dict]:
    """(the model path, ``load_detector`` keywords) from ``MODEL_FILE_OPTIONS`` and ``PRECISION_OPTION``;
    ``click.UsageError`` unless exactly one of the two files is given, and for a precision of an exported model."""
    if (checkpoint is None) == (model_file is None):
        raise click.UsageError("give exactly one of --checkpoint and --model")
    if model_file is not None:
        if precision != DEFAULT_PRECISION:
            raise click.UsageError("--precision applies to --checkpoint; an exported model keeps its own precision")
        return model_file, {}
    return checkpoint, {"precision": precision}
