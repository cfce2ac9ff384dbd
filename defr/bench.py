"""``defr bench``: latency of the pair backends (PyTorch eager, ONNX Runtime, TensorRT).

One measurement is one backend call as ``HOIDetector`` makes it: a batch of B preprocessed
images with ``pairs`` pairs per image (P = B · pairs), outputs copied to the CPU. With no pairs,
exported graphs get the detector's one dummy pair. Median and 90th-percentile wall time over
``repeats`` calls after ``warmup`` calls; images/s = B / median. Random images and boxes: speed
does not depend on the values.

``--model`` is a checkpoint (timed in PyTorch and, exported to a temporary folder, in ONNX
Runtime), an exported ``.onnx`` (ONNX Runtime, any precision: ``model.onnx``, ``model.fp16.onnx``,
``model.int8.onnx``) or ``.engine`` (TensorRT), or a backbone name such as ``tiny-vit`` or
``ViT-B-32`` with ``--image-size`` (random weights). For checkpoints and backbone names,
``backends`` picks among ``torch`` (PyTorch eager, at ``precision``), ``onnxruntime`` (the exported
``model.onnx``), ``onnxruntime-int8`` (``model.int8.onnx`` of the same export, statically
quantized on ``INT8_CALIBRATION_IMAGES`` images of the built-in synthetic set, no accuracy gate:
speed does not depend on the calibration), and the same files in OpenVINO: ``openvino``
(``model.onnx``), ``openvino-bf16`` (``model.onnx`` with the bf16 inference-precision hint) and
``openvino-int8`` (``model.int8.onnx``). An exported model runs in ``runtime`` (default: the file
kind's, ``defr.runtime.registry``) at ``precision``. Every backend is opened by the front door,
``defr.runtime.load_backend``. Rows name the runtime and the precision (``openvino``, ``bf16``).

The backends are timed side by side: for each (batch, pairs), one call of each backend in turn,
``repeats`` times, so a machine whose load changes during the run slows them all alike; each timed
call starts ``SETTLE_S`` after the previous one, when the previous backend's threads have stopped
spinning.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from defr.choices import FILE_PRECISION, MaskMode, PrecisionRequest, resolve_mask_mode
from defr.errors import ConfigError
from defr.export import ExportConfig, export_model
from defr.export.int8 import INT8_FILE
from defr.export.nncf_int8 import NNCF_FILE
from defr.machine import check_device, machine_info
from defr.model import create_model, save_checkpoint
from defr.runtime import PairBackend, load_backend
from defr.runtime.contract import example_inputs, with_dummy_pair
from defr.runtime.registry import CHECKPOINT, ModelOptions, file_kind, runtime_for

EXPORT_BACKENDS = {  # --backends name → (file of the export, runtime, precision)
    "onnxruntime": ("model.onnx", "onnxruntime", FILE_PRECISION),
    "onnxruntime-int8": (INT8_FILE, "onnxruntime", FILE_PRECISION),
    "openvino": ("model.onnx", "openvino", FILE_PRECISION),
    "openvino-bf16": ("model.onnx", "openvino", "bf16"),
    "openvino-int8": (INT8_FILE, "openvino", FILE_PRECISION),
    "openvino-nncf": (NNCF_FILE, "openvino", FILE_PRECISION),  # NNCF's int8 file (a second export)
    "onnxruntime-nncf": (NNCF_FILE, "onnxruntime", FILE_PRECISION),
}
BACKENDS = ("torch", *EXPORT_BACKENDS)
DEFAULT_BACKENDS = ("torch", "onnxruntime")
INT8_CALIBRATION_IMAGES = 8
SETTLE_S = 0.05  # pause before each timed call of side-by-side timing (time_side_by_side)


MAX_THREADS = 1024  # more threads than any machine has cores only thrashes (and 100,000 fails in the runtimes)
MAX_PAIRS_PER_CALL = 65_536  # 256 images × 225 pairs fits; 64 × 100,000 would allocate tens of GB


@dataclass
class BenchConfig:
    model: str
    image_size: int | None = None  # needed for a backbone name; otherwise the model's
    batches: tuple[int, ...] = (1, 8)
    pairs: tuple[int, ...] = (0, 16, 64, 225)  # per image
    backends: tuple[str, ...] = DEFAULT_BACKENDS  # for checkpoints and backbone names
    warmup: int = 3
    repeats: int = 10
    device: str = "cpu"
    threads: int | None = None  # CPU threads of both PyTorch and ONNX Runtime (None: their defaults)
    mask_mode: MaskMode | None = None  # None: the file's for exported models, else the default (resolve_mask_mode)
    runtime: str | None = None  # who runs an exported model (defr.runtime.RUNTIMES; None: the file kind's)
    attention: str | None = None  # the pair attention of the PyTorch backend (defr.kernels; None: auto)
    precision: PrecisionRequest = FILE_PRECISION  # of the torch backend and of an exported model

    def __post_init__(self) -> None:
        if not self.batches or min(self.batches) < 1:
            raise ConfigError(f"batch sizes must be >= 1, got {list(self.batches)}")
        if not self.pairs or min(self.pairs) < 0:
            raise ConfigError(f"pair counts must be >= 0, got {list(self.pairs)}")
        if self.threads is not None and not 1 <= self.threads <= MAX_THREADS:
            raise ConfigError(f"threads must be in [1, {MAX_THREADS}], not {self.threads}")
        biggest = max(self.batches) * max(self.pairs)
        if biggest > MAX_PAIRS_PER_CALL:
            raise ConfigError(
                f"batch {max(self.batches)} × pairs {max(self.pairs)} = {biggest} pairs in one call, more than "
                f"{MAX_PAIRS_PER_CALL}: lower --batch or --pairs"
            )
        check_device(self.device)
        if self.warmup < 0 or self.repeats < 1:
            raise ConfigError(f"need warmup >= 0 and repeats >= 1, got {self.warmup} and {self.repeats}")
        unknown = set(self.backends) - set(BACKENDS)
        if unknown or not self.backends:
            raise ConfigError(f"backends must be among {BACKENDS}, got {list(self.backends)}")
        self.options()  # the model's choices: checked by their record
        if self.runtime is not None and file_kind(self.model) == CHECKPOINT:
            raise ConfigError(
                f"{self.model}: --runtime applies to an exported model; for a checkpoint or backbone name "
                f"pick the runtimes with --backends ({', '.join(BACKENDS)})"
            )

    def options(self, **changes) -> ModelOptions:
        """The ``ModelOptions`` of the benchmarked model (``changes``: other values of its fields)."""
        choices = {"runtime": self.runtime, "precision": self.precision, "mask_mode": self.mask_mode}
        return ModelOptions(**{**choices, "device": self.device, "threads": self.threads, **changes})


@dataclass
class BenchRow:
    backend: str
    precision: str
    batch: int
    pairs: int  # per image
    median_ms: float
    p90_ms: float
    images_per_s: float


def time_backend(
    backend: PairBackend, image_size: int, batch: int, pairs: int, warmup: int, repeats: int
) -> list[float]:
    """Seconds per call, ``repeats`` of them, after ``warmup`` calls."""
    images, boxes_h, boxes_o, pair_index = example_inputs(image_size, batch, batch * pairs)
    boxes_h, boxes_o, pair_index = with_dummy_pair(backend, image_size, boxes_h, boxes_o, pair_index)
    times = []
    for k in range(warmup + repeats):
        start = time.perf_counter()
        outputs = backend(images, boxes_h, boxes_o, pair_index)
        [o.cpu() for o in outputs]  # waits for asynchronous devices
        if k >= warmup:
            times.append(time.perf_counter() - start)
    return times


def time_side_by_side(
    backends: list[PairBackend], image_size: int, batch: int, pairs: int, cfg: BenchConfig
) -> list[list[float]]:
    """Seconds per call of each backend, interleaved: ``cfg.warmup`` calls of each, then ``cfg.repeats``
    rounds of one call of each in turn. With several backends each timed call comes ``SETTLE_S`` after
    the previous one: the worker threads of a multi-threaded backend spin for a while after its call
    returns, and would take the cores the next backend needs (measured: PyTorch at 2 threads right
    after ONNX Runtime ran 6–9× slower than alone)."""
    for backend in backends:
        time_backend(backend, image_size, batch, pairs, cfg.warmup, 0)
    times: list[list[float]] = [[] for _ in backends]
    for _ in range(cfg.repeats):
        for k, backend in enumerate(backends):
            if len(backends) > 1:
                time.sleep(SETTLE_S)
            times[k] += time_backend(backend, image_size, batch, pairs, 0, 1)
    return times


def row(name: str, precision: str, batch: int, pairs: int, times: list[float]) -> BenchRow:
    median = statistics.median(times)
    return BenchRow(
        backend=name,
        precision=precision,
        batch=batch,
        pairs=pairs,
        median_ms=1000 * median,
        p90_ms=1000 * float(np.percentile(times, 90)),
        images_per_s=batch / median,
    )


def build_backends(cfg: BenchConfig, workdir: Path) -> tuple[list[tuple[str, PairBackend]], int]:
    """([(name, backend)], image size) for ``cfg.model``, every backend opened by ``load_backend``;
    checkpoints and backbone names are exported into ``workdir``."""
    if file_kind(cfg.model) != CHECKPOINT:
        row = runtime_for(cfg.model, cfg.runtime)
        device = cfg.device if row.devices is None or cfg.device.split(":")[0] in row.devices else row.devices[0]
        backend = load_backend(cfg.model, cfg.options(device=device))
        return [(row.name, backend)], backend.meta.image_size
    checkpoint = Path(cfg.model) if Path(cfg.model).is_file() else random_checkpoint(cfg, workdir)
    mask_mode = resolve_mask_mode(None, cfg.mask_mode, checkpoint)  # a checkpoint runs in any mode
    backends: list[tuple[str, PairBackend]] = []
    if "torch" in cfg.backends:
        torch_options = cfg.options(runtime="torch", attention=cfg.attention, image_size=cfg.image_size)
        backends.append(("torch", load_backend(checkpoint, torch_options)))
    exported = [b for b in cfg.backends if b in EXPORT_BACKENDS]
    if exported:
        int8 = any(EXPORT_BACKENDS[b][0] == INT8_FILE for b in exported)
        export = ExportConfig(
            image_size=cfg.image_size,
            verify=False,
            mask_mode=mask_mode,
            int8=int8,
            calibration_images=INT8_CALIBRATION_IMAGES,
        )
        export_model(checkpoint, workdir / "onnx", export, log=_quiet)
        if any(EXPORT_BACKENDS[b][0] == NNCF_FILE for b in exported):  # calibrated on the same images
            export_model(checkpoint, workdir / "nncf", replace(export, int8=True, quantizer="nncf"), log=_quiet)
        for name in exported:
            file, runtime, precision = EXPORT_BACKENDS[name]
            folder = workdir / ("nncf" if file == NNCF_FILE else "onnx")
            options = ModelOptions(runtime=runtime, precision=precision, device=cfg.device, threads=cfg.threads)
            # NNCF rows by their --backends name: the same runtime also runs ONNX Runtime's int8 file
            backends.append((name if file == NNCF_FILE else runtime, load_backend(folder / file, options)))
    return backends, backends[0][1].meta.image_size


def random_checkpoint(cfg: BenchConfig, workdir: Path) -> Path:
    """A checkpoint of backbone ``cfg.model`` with random weights, 600 HICO classes."""
    if cfg.image_size is None:
        raise ConfigError(f"{cfg.model}: not a file; to benchmark a backbone with random weights give --image-size")
    model = create_model(cfg.model, cfg.image_size)
    path = workdir / "random.safetensors"
    save_checkpoint(model, path)
    return path


def _quiet(message: str) -> None:
    """Export progress is not part of the benchmark output."""


def run_bench(cfg: BenchConfig, progress: Callable[[str], None] | None = None) -> dict:
    """Every (backend, batch, pairs) of ``cfg``: {"config", "machine", "rows"}; ``progress`` gets each row's line."""
    default_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or default_threads)
    load_before = os.getloadavg()  # the machine may be shared: the load goes with the numbers
    try:
        with tempfile.TemporaryDirectory(prefix="defr-bench-") as tmp:
            backends, image_size = build_backends(cfg, Path(tmp))
            measured = []  # (backend index, row)
            for batch in cfg.batches:
                for pairs in cfg.pairs:
                    times = time_side_by_side([b for _, b in backends], image_size, batch, pairs, cfg)
                    for k, ((name, backend), t) in enumerate(zip(backends, times, strict=True)):
                        measured.append((k, row(name, backend.precision, batch, pairs, t)))
                        if progress:
                            progress(format_table([measured[-1][1]], header=False))
        machine = machine_info(cfg.device)
    finally:
        torch.set_num_threads(default_threads)
    rows = [r for _, r in sorted(measured, key=lambda m: m[0])]  # backend by backend (a stable sort)
    config = {**asdict(cfg), "image_size": image_size}
    timing = "side by side" if len(backends) > 1 else "alone"
    result = {
        "config": config,
        "machine": machine,
        "timing": timing,
        "settle_s": SETTLE_S,
        "loadavg": {"before": load_before, "after": os.getloadavg()},
        "rows": [asdict(r) for r in rows],
    }
    return result


def format_table(rows: list[BenchRow], header: bool = True) -> str:
    lines = [
        f"{'backend':<12} {'precision':<9} {'batch':>5} {'pairs':>5} {'median ms':>10} {'p90 ms':>10} {'images/s':>9}"
    ]
    lines += [
        f"{r.backend:<12} {r.precision:<9} {r.batch:>5} {r.pairs:>5} {r.median_ms:>10.2f} {r.p90_ms:>10.2f} "
        f"{r.images_per_s:>9.2f}"
        for r in rows
    ]
    return "\n".join(lines if header else lines[1:])
