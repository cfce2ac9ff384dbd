"""Command modules: each parses options, calls the library, and turns ``DefrError`` / ``OSError`` into one line.

The only modules that import click. ``defr/cli.py`` registers them lazily (``defr --help`` stays instant).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import click

from defr.errors import DefrError
from defr.model.pair_attention import ATTENTION_BACKENDS, MASK_MODES
from defr.runtime.openvino_backend import ONNX_RUNTIMES


@contextmanager
def one_line_errors(exit_codes: Mapping[type[BaseException], int] | None = None) -> Iterator[None]:
    """Project errors and file-system errors become ``click.ClickException`` (one line, exit 1, or the
    code of the first class of ``exit_codes`` the error is an instance of); a Ctrl-C
    (``KeyboardInterrupt``, also a video run's ``StreamInterrupted``) exits with code 130, as any
    program's Ctrl-C; anything else is a bug and keeps its traceback."""
    try:
        yield
    except (DefrError, OSError) as e:
        error = click.ClickException(str(e))
        error.exit_code = next((code for cls, code in (exit_codes or {}).items() if isinstance(e, cls)), 1)
        raise error from None
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        raise SystemExit(130) from None


@contextmanager
def sigterm_as_interrupt() -> Iterator[list[int]]:
    """Inside the block SIGTERM is handled like Ctrl-C: it raises ``KeyboardInterrupt`` (once: a second
    signal while the interrupted work cleans up is ignored). Yields the list of signals received. In a
    thread other than the main one (where Python cannot set handlers) nothing changes."""
    received: list[int] = []

    def handler(signum, frame) -> None:
        if not received:
            received.append(signum)
            raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


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

RAY_OPTION = click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    metavar="[ADDRESS]",
    help="Run as a Ray batch job: on a local Ray (--ray, --ray local) or the cluster at ADDRESS (auto, "
    "HOST:PORT); same outputs as without it. Needs the serve extra; docs/serving.md.",
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
