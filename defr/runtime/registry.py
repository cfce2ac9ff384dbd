"""The front door from a model file to a pair backend, and the one table of runtimes.

``RUNTIMES`` has one row per runtime (as timm's registry has one entry per model): its name, the
backend class, the file kinds it opens, the precisions it runs each file precision at, the optional
extra it needs, the devices it computes on, the ``ModelOptions`` fields that are its own, and how
the door opens it. ``load_backend`` is the door: ``ModelOptions`` (checked when it is built) → the
row → the file checked against its sidecar and its graph → the mask mode and precision resolved here,
once → the row's ``open``. ``HOIDetector.open`` / ``load_detector`` wrap it. Backend classes are
constructed here and in their own ``open`` classmethods only (``tests/test_architecture.py``).

Adding a runtime: its backend module (a class with an ``open`` classmethod that takes opened
values, no options) and one row below. Adding a file kind: list its suffix in a row (and, if its
claims can be read, a checker in ``defr.runtime.graph_claims``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from defr.choices import (
    DEFAULT_PRECISION,
    FILE_PRECISION,
    ONNX_RUNTIME_RUNS,
    OPENVINO_RUNS,
    TENSORRT_RUNS,
    TORCH_RUNS,
    MaskMode,
    Precision,
    PrecisionRequest,
    RunsAt,
    check_mask_mode,
    check_precision,
    resolve_mask_mode,
)
from defr.errors import ConfigError
from defr.model import DEFR, load_model
from defr.model.pair_attention import ATTENTION_BACKENDS
from defr.optional import import_onnxruntime, import_openvino, import_tensorrt
from defr.runtime.backends import DEFAULT_ATTENTION, OnnxBackend, TorchBackend, onnx_providers
from defr.runtime.contract import BackendError, PairBackend
from defr.runtime.graph_claims import CLAIM_CHECKS
from defr.runtime.onnx_session import SessionConfig
from defr.runtime.openvino_backend import OpenVinoBackend, OpenVinoConfig
from defr.runtime.sidecar import Sidecar, read_sidecar
from defr.runtime.tensorrt_backend import TensorRTBackend

DEVICE_WORDS = {"cpu": "the CPU", "cuda": "a CUDA device"}  # device types as messages name them
CHECKPOINT = "checkpoint"  # the file kind of anything no row names by suffix: ours or the released .pth


@dataclass(frozen=True)
class ModelOptions:
    """How to open a model file: the choices of every entry point (``detect``, ``video``, ``serve``,
    ``bench``, the demo, ``HOIDetector.open``), each checked here, once, with one message.

    runtime: a name of ``RUNTIMES`` (None: the first row that opens the file's kind: PyTorch for a
    checkpoint, ONNX Runtime for ``.onnx``, TensorRT for ``.engine``). precision: a ``Precision`` or
    ``FILE_PRECISION``, the file's own (a checkpoint's: fp32); the row says which it runs a file at.
    mask_mode: a ``MaskMode`` or None, the file's (an export's baked-in mode; a checkpoint runs the
    default). device: where it computes. threads: CPU threads of ONNX Runtime and OpenVINO. The rest
    are one runtime's each (its row's ``takes``): attention and image_size (PyTorch), providers and
    session (ONNX Runtime), openvino (OpenVINO's ``OpenVinoConfig``).
    """

    runtime: str | None = None
    precision: PrecisionRequest = FILE_PRECISION
    mask_mode: MaskMode | None = None
    device: str = "cpu"
    threads: int | None = None
    attention: str | None = None
    image_size: int | None = None
    providers: tuple[str, ...] | None = None
    session: SessionConfig | None = None
    openvino: OpenVinoConfig | None = None

    def __post_init__(self) -> None:
        if self.runtime is not None:
            check_runtime(self.runtime)
        check_precision(self.precision)
        if self.mask_mode is not None:
            check_mask_mode(self.mask_mode)
        if self.attention is not None and self.attention not in ATTENTION_BACKENDS:
            raise ConfigError(f"attention must be one of {ATTENTION_BACKENDS}, not {self.attention!r}")
        if self.providers is not None:
            object.__setattr__(self, "providers", tuple(self.providers))


MODEL_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(ModelOptions))


@dataclass(frozen=True)
class Opening:
    """A model file checked (an export: against its sidecar and graph), with its choices resolved:
    what a row's ``open`` gets. sidecar and sha256 are None for a checkpoint."""

    path: Path
    precision: Precision
    mask_mode: MaskMode
    options: ModelOptions
    sidecar: Sidecar | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Runtime:
    """One row of ``RUNTIMES``. files: the kinds it opens (suffixes, or ``CHECKPOINT``); runs: file
    precision → the precisions it runs such a file at (``defr.choices``); needs: the ``defr.optional``
    importer of the package it needs (its error names the extra: ``pip install "defr[openvino]"``;
    None: defr's base install); devices: the device types it computes on (None: any); takes: the
    ``ModelOptions`` fields only it uses."""

    name: str
    label: str
    backend: type
    files: tuple[str, ...]
    runs: RunsAt
    open: Callable[[Opening], PairBackend]
    needs: Callable[[], object] | None = None
    devices: tuple[str, ...] | None = None
    takes: tuple[str, ...] = ()


def _open_torch(o: Opening) -> PairBackend:
    return torch_backend(load_model(o.path, o.options.image_size), o.options)


def torch_backend(model: DEFR, options: ModelOptions) -> TorchBackend:
    """A model in memory as a PyTorch backend at ``options`` (a checkpoint's, or the demo's mask study):
    its precision and mask mode resolved as for a checkpoint."""
    precision = _run_precision(RUNTIMES["torch"], DEFAULT_PRECISION, options.precision, "the model")
    mask_mode = resolve_mask_mode(None, options.mask_mode, "the model")
    return TorchBackend(model, options.device, precision, mask_mode, options.attention or DEFAULT_ATTENTION)


def _open_onnxruntime(o: Opening) -> PairBackend:
    options = o.options
    providers = list(options.providers) if options.providers is not None else onnx_providers(options.device)
    session = options.session or SessionConfig()
    if options.threads is not None:
        session = dataclasses.replace(session, threads=options.threads)
    return OnnxBackend.open(o.path, o.sidecar, o.sha256, o.precision, providers, session)


def _open_openvino(o: Opening) -> PairBackend:
    config = o.options.openvino or OpenVinoConfig()
    if o.options.threads is not None:
        config = dataclasses.replace(config, threads=o.options.threads)
    return OpenVinoBackend.open(o.path, o.sidecar, o.sha256, o.precision, config)


def _open_tensorrt(o: Opening) -> PairBackend:
    return TensorRTBackend.open(o.path, o.sidecar, o.precision, o.options.device)


RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime("torch", "PyTorch", TorchBackend, (CHECKPOINT,), TORCH_RUNS, _open_torch,
                takes=("attention", "image_size")),
        Runtime("onnxruntime", "ONNX Runtime", OnnxBackend, (".onnx",), ONNX_RUNTIME_RUNS, _open_onnxruntime,
                needs=import_onnxruntime, takes=("providers", "session")),
        Runtime("openvino", "OpenVINO", OpenVinoBackend, (".onnx",), OPENVINO_RUNS, _open_openvino,
                needs=import_openvino, devices=("cpu",), takes=("openvino",)),
        Runtime("tensorrt", "TensorRT", TensorRTBackend, (".engine",), TENSORRT_RUNS, _open_tensorrt,
                needs=import_tensorrt, devices=("cuda",)),
    )
}  # fmt: skip
EXPORTED_SUFFIXES = tuple(dict.fromkeys(s for r in RUNTIMES.values() for s in r.files if s != CHECKPOINT))


def check_runtime(name: object) -> str:
    """``name`` if it is a runtime of ``RUNTIMES``; else a ``ConfigError`` naming them."""
    if name not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {tuple(RUNTIMES)}, not {name!r}")
    return name


def file_kind(path: str | os.PathLike) -> str:
    """A model file's kind: its suffix when a row opens it (``.onnx``, ``.engine``), else ``CHECKPOINT``."""
    suffix = Path(path).suffix.lower()
    return suffix if suffix in EXPORTED_SUFFIXES else CHECKPOINT


def runtime_for(path: str | os.PathLike, name: str | None = None) -> Runtime:
    """The row that opens ``path``: ``name``'s (ConfigError when it does not open that kind of file),
    else the first row that opens its kind."""
    kind = file_kind(path)
    if name is None:
        return next(r for r in RUNTIMES.values() if kind in r.files)
    row = RUNTIMES[check_runtime(name)]
    if kind not in row.files:
        opens = " and ".join("checkpoints" if f == CHECKPOINT else f"exported {f} files" for f in row.files)
        raise ConfigError(f"{path}: runtime {name!r} applies to {opens}")
    return row


def load_backend(path: str | os.PathLike, options: ModelOptions | None = None, **fields) -> PairBackend:
    """The pair backend of any model file, for any runtime and precision: THE front door.

    path: a checkpoint (ours or the released ``.pth``), an exported ``.onnx`` or an ``.engine``.
    options: ``ModelOptions``; ``fields`` (its field names) replace its values, e.g.
    ``load_backend("model.onnx", runtime="openvino", precision="bf16")``.

    Raises ``ConfigError`` for a choice the file or runtime cannot take (one line naming it),
    ``MissingDependency`` for a runtime whose extra is not installed, ``SidecarError`` for an export
    whose ``model.json`` disagrees with the file or its graph, ``BackendError`` for a file the runtime
    cannot open.
    """
    options = dataclasses.replace(options or ModelOptions(), **fields)
    path = Path(path)
    row = runtime_for(path, options.runtime)
    if row.needs is not None:
        row.needs()  # MissingDependency naming the extra, before anything is read
    _check_row_options(row, options, path)
    if file_kind(path) == CHECKPOINT:  # its choices checked before the weights are read
        precision = _run_precision(row, DEFAULT_PRECISION, options.precision, path)
        return row.open(Opening(path, precision, resolve_mask_mode(None, options.mask_mode, path), options))
    return row.open(_opening(row, path, options))


def _opening(row: Runtime, path: Path, options: ModelOptions) -> Opening:
    """An exported file checked against its sidecar (checksums, the graph's own claims) with its mask
    mode and precision resolved for ``row``."""
    if not path.is_file():
        raise BackendError(f"{path}: no such {path.suffix} file")
    sidecar = read_sidecar(path)
    entry = sidecar.check_file(path)
    check_claims = CLAIM_CHECKS.get(file_kind(path))
    if check_claims is not None:  # the sidecar describes this graph: its precision and mask mode
        check_claims(path, entry.sha256, entry.precision, sidecar.graph.mask_mode)
    mask_mode = resolve_mask_mode(sidecar.graph.mask_mode, options.mask_mode, path)
    precision = _run_precision(row, entry.precision, options.precision, path)
    return Opening(path, precision, mask_mode, options, sidecar, entry.sha256)


def _check_row_options(row: Runtime, options: ModelOptions, path: Path) -> None:
    """ConfigError for another runtime's option, or a device the row does not compute on."""
    for other in RUNTIMES.values():
        for name in other.takes:
            if name not in row.takes and getattr(options, name) is not None:
                raise ConfigError(f"{path}: {name} is {other.label}'s option, not {row.label}'s")
    device = torch.device(options.device).type
    if row.devices is not None and device not in row.devices:
        where = " or ".join(DEVICE_WORDS.get(d, d) for d in row.devices)
        raise ConfigError(f"{path}: {row.label} runs on {where}, not {options.device!r}")


def _run_precision(row: Runtime, file_precision: Precision, requested: PrecisionRequest, path: object) -> Precision:
    """The precision ``row`` runs a ``file_precision`` file at for ``requested``; ConfigError, naming the
    runtimes that can, when it cannot."""
    want = file_precision if requested == FILE_PRECISION else requested
    runs = row.runs.get(file_precision, ())
    if want in runs:
        return want
    others = [r.name for r in RUNTIMES.values() if want in r.runs.get(file_precision, ()) and r.files == row.files]
    hint = f" (runtime {others[0]} does)" if others else ""
    if not runs:
        raise ConfigError(f"{path}: {row.label} does not run {file_precision} files{hint}")
    raise ConfigError(f"{path}: {row.label} runs this {file_precision} file at {' or '.join(runs)}, not {want}{hint}")
