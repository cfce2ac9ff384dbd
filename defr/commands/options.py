"""Click options shared by ``defr detect``, ``video``, ``bench``, ``box-noise`` and ``defr-export``.

Choices and defaults are read from the library (``defr.choices``, ``defr.kernels``), never retyped
here, so a new mode or precision reaches every command at once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from defr.choices import DEFAULT_PRECISION, TORCH_PRECISIONS
from defr.clikit import mask_mode_option
from defr.errors import ConfigError
from defr.kernels import ATTENTION_BACKENDS
from defr.machine import SEED_MAX, check_device
from defr.runtime.openvino_backend import ONNX_RUNTIMES

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


def model_source(
    checkpoint: Path | None, model_file: Path | None, precision: str, runtime: str | None = None
) -> tuple[Path, dict]:
    """(the model path, ``load_detector`` keywords) from ``MODEL_FILE_OPTIONS``, ``PRECISION_OPTION`` and
    ``RUNTIME_OPTION``; ``click.UsageError`` unless exactly one of the two files is given, and for a
    precision of an exported model (except bf16 for one run by OpenVINO: its inference-precision hint)."""
    if (checkpoint is None) == (model_file is None):
        raise click.UsageError("give exactly one of --checkpoint and --model")
    if model_file is None:
        return checkpoint, {"precision": precision, "runtime": runtime}
    if runtime == "openvino":
        if precision not in (DEFAULT_PRECISION, "bf16"):
            raise click.UsageError("--model with --runtime openvino takes --precision fp32 (the file's) or bf16")
        return model_file, {"precision": precision, "runtime": runtime}
    if precision != DEFAULT_PRECISION:
        raise click.UsageError(
            "--precision applies to --checkpoint (and bf16 to --model with --runtime openvino); "
            "an exported model keeps its own precision"
        )
    return model_file, {"runtime": runtime}


def model_inputs(model: Path) -> list[Path]:
    """The files a model path reads, for ``defr.files.OutputSet``'s inputs: a checkpoint, or an exported
    file with every file of its folder (the sidecar ``model.json``, the other graphs, caches)."""
    model = Path(model)
    if model.suffix in (".onnx", ".engine", ".xml") and model.parent.is_dir():
        return [model, *(p for p in model.parent.iterdir() if p.is_file())]
    return [model]
