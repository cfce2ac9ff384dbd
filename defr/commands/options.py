"""Click options shared by ``defr detect``, ``video``, ``serve``, ``bench``, ``box-noise`` and ``defr-export``.

Choices and defaults are read from the library (``defr.choices``, ``defr.kernels``, the runtime table
``defr.runtime.registry.RUNTIMES``), never retyped here, so a new runtime, mode or precision reaches
every command at once. The model choices (``--runtime``, ``--precision``, ``--mask-mode``) are taken
as text and checked once, by the record they build (``model_request`` → ``ModelOptions``), so a bad
value gives the same one line from every command and from the Python API.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from defr.choices import DEFAULT_MASK_MODE, DEFAULT_PRECISION, FILE_PRECISION, MASK_MODES, PRECISIONS
from defr.errors import ConfigError
from defr.kernels import ATTENTION_BACKENDS
from defr.machine import SEED_MAX, check_device
from defr.runtime.registry import CHECKPOINT, RUNTIMES, ModelOptions, runtime_for

ATTENTION_OPTION = click.option(
    "--attention",
    type=click.Choice(ATTENTION_BACKENDS),
    help="Pair attention of a checkpoint: auto (the Triton kernel on CUDA, the grouped PyTorch path on CPU; "
    "default), triton or reference.",
)


def _default_runtimes() -> str:
    """ "torch for a checkpoint, onnxruntime for .onnx, ...": the first row of each file kind."""
    kinds = dict.fromkeys(kind for row in RUNTIMES.values() for kind in row.files)
    named = {kind: runtime_for(f"model{'' if kind == CHECKPOINT else kind}").name for kind in kinds}
    return ", ".join(f"{name} for {'a checkpoint' if kind == CHECKPOINT else kind}" for kind, name in named.items())


MASK_MODE_OPTION = click.option(
    "--mask-mode",
    metavar="|".join(MASK_MODES),
    help="How a pair's boxes mask the CLS attention: hard (the paper) or released (the released code's +1 bias). "
    f"A checkpoint runs in either (default {DEFAULT_MASK_MODE}); an exported file keeps its own.",
)
PRECISION_OPTION = click.option(
    "--precision",
    default=FILE_PRECISION,
    show_default=True,
    metavar="|".join((FILE_PRECISION, *PRECISIONS)),
    help=f"Compute precision; {FILE_PRECISION}: the model file's own ({DEFAULT_PRECISION} for a checkpoint). "
    "Which ones each runtime runs a file at: docs/export.md (fp16 under PyTorch needs CUDA; bf16 of an "
    "fp32 model.onnx: --runtime openvino).",
)
RUNTIME_OPTION = click.option(
    "--runtime",
    metavar="|".join(RUNTIMES),
    help=f"Who runs the model: {', '.join(RUNTIMES)}. Default by file kind: {_default_runtimes()}.",
)


def MODEL_CHOICE_OPTIONS(command: Callable) -> Callable:  # noqa: N802 (used as a decorator, like the others)
    """``--runtime``, ``--precision`` and ``--mask-mode``: how a model file is opened (``ModelOptions``)."""
    return RUNTIME_OPTION(PRECISION_OPTION(MASK_MODE_OPTION(command)))


class DeviceType(click.ParamType):
    """A torch device this machine has (``defr.machine.check_device``): ``banana``, or ``cuda`` without CUDA,
    is refused while the options are parsed, before a model is loaded."""

    name = "device"

    def __init__(self, allow_auto: bool = False):
        self.allow_auto = allow_auto

    def convert(self, value, param, ctx):
        try:
            return check_device(str(value), self.allow_auto)
        except ConfigError as e:
            self.fail(str(e), param, ctx)


class FiniteFloat(click.FloatRange):
    """A float in a range that is also finite: click's FloatRange lets ``nan`` through (every comparison
    with it is false)."""

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if number != number or number in (float("inf"), float("-inf")):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


# defr synth: the long image side / frame width, and a video's frames (10^5 frames: 1.9 hours at 15 fps)
MIN_SIZE, MAX_SIZE, MAX_FRAMES = 32, 4096, 100_000

SEED = click.IntRange(0, SEED_MAX)  # numpy's seeds; -1 or 2**70 refused by name

DEVICE_OPTION = click.option(
    "--device", default="cpu", show_default=True, type=DeviceType(), help="Torch device: cpu, cuda, cuda:1, ..."
)


def MODEL_OPTIONS(command: Callable) -> Callable:  # noqa: N802 (used as a decorator, like the others)
    """The one option group of a command that opens a model: ``--checkpoint CKPT`` or ``--model FILE``
    (an exported ``.onnx`` / ``.engine``; give one) and ``MODEL_CHOICE_OPTIONS``; read with ``model_request``."""
    command = click.option(
        "--model",
        "model_file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Alternative to --checkpoint: an exported model.onnx or model.engine.",
    )(command)
    command = click.option(
        "--checkpoint", type=click.Path(dir_okay=False, path_type=Path), help="DEFR checkpoint (ours or .pth)."
    )(command)
    return MODEL_CHOICE_OPTIONS(command)


RAY_OPTION = click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    metavar="[ADDRESS]",
    help="Run as a Ray batch job: on a local Ray (--ray, --ray local) or the cluster at ADDRESS (auto, "
    "HOST:PORT); same outputs as without it. Needs the serve extra; docs/serving.md.",
)


def model_request(
    checkpoint: Path | None, model_file: Path | None, runtime: str | None, precision: str, mask_mode: str | None, **more
) -> tuple[Path, ModelOptions]:
    """(the model path, its ``ModelOptions``) from ``MODEL_OPTIONS``; ``more``: other ``ModelOptions``
    fields (device, attention, ...). Call it inside ``one_line_errors``: a bad choice is the record's
    ``ConfigError``, one line. ``click.UsageError`` unless exactly one of the two files is given."""
    if (checkpoint is None) == (model_file is None):
        raise click.UsageError("give exactly one of --checkpoint and --model")
    return checkpoint or model_file, ModelOptions(runtime=runtime, precision=precision, mask_mode=mask_mode, **more)


def model_inputs(model: Path) -> list[Path]:
    """The files a model path reads, for ``defr.files.OutputSet``'s inputs: a checkpoint, or an exported
    file with every file of its folder (the sidecar ``model.json``, the other graphs, caches)."""
    model = Path(model)
    if model.suffix in (".onnx", ".engine", ".xml") and model.parent.is_dir():
        return [model, *(p for p in model.parent.iterdir() if p.is_file())]
    return [model]
