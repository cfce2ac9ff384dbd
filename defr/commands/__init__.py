"""Command modules: each parses options, calls the library, and turns ``DefrError`` / ``OSError`` into one line.

The only modules that import click. ``defr/cli.py`` registers them lazily (``defr --help`` stays instant).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from defr.errors import DefrError
from defr.model.pair_attention import ATTENTION_BACKENDS, MASK_MODES
from defr.runtime.openvino_backend import ONNX_RUNTIMES


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Project errors and file-system errors become ``click.ClickException`` (one line, exit 1);
    anything else is a bug and keeps its traceback."""
    try:
        yield
    except (DefrError, OSError) as e:
        raise click.ClickException(str(e)) from None


def int_list(ctx, param, value: str) -> tuple[int, ...]:
    """A click callback: ``"1,8"`` → ``(1, 8)``."""
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


MASK_MODE_OPTION = click.option(
    "--mask-mode",
    type=click.Choice(MASK_MODES),
    help="How a pair's boxes mask the CLS attention: hard (the paper; default for checkpoints) or released "
    "(the released code's +1 bias). Exported files keep the mode they were exported with.",
)

ATTENTION_OPTION = click.option(
    "--attention",
    type=click.Choice(ATTENTION_BACKENDS),
    help="Pair attention of a checkpoint: auto (the Triton kernel on CUDA, the grouped PyTorch path on CPU; "
    "default), triton or reference.",
)

RUNTIME_OPTION = click.option(
    "--runtime",
    type=click.Choice(ONNX_RUNTIMES),
    help="Who runs an exported .onnx given with --model: onnxruntime (default) or openvino (CPU; with "
    "--precision bf16, OpenVINO's bf16 inference-precision hint on model.onnx).",
)


def model_file_precision(model_file, runtime: str | None, precision: str) -> None:
    """UsageError unless ``--precision`` fits the model: any for a checkpoint, fp32 (the file's own) for
    an exported file, or bf16 for one run by OpenVINO."""
    if model_file is not None and precision != "fp32" and not (runtime == "openvino" and precision == "bf16"):
        raise click.UsageError(
            "--precision applies to --checkpoint (and bf16 to --model with --runtime openvino); "
            "an exported model keeps its own precision"
        )


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
