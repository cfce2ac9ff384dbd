"""``OpenVinoBackend``: an exported ``model.onnx`` (fp32, or bf16 by OpenVINO's inference-precision
hint) or ``model.int8.onnx`` (the same QDQ file ONNX Runtime runs) run by OpenVINO on the CPU.

OpenVINO reads the exported ONNX graphs as they are, the dynamic batch and pair axes included, so
there is no second file format: ``docs/export.md`` § Which CPU runtime to pick says when it pays.
What this module adds around ``openvino.Core``:

- nothing unchecked: the front door (``defr.runtime.registry.load_backend``) reads ``model.json``
  beside the file and checks the file's SHA-256 against it before OpenVINO reads anything, as for
  every exported runtime, and resolves the precision (the file's, or bf16 for an fp32 file);
- the precision is always set, never left to OpenVINO: its CPU plugin defaults to bf16 on CPUs
  with native bf16 (AMX), so fp32 mode sets ``INFERENCE_PRECISION_HINT`` to f32 explicitly. bf16
  on a CPU whose OpenVINO reports no ``BF16`` capability is a ``BackendError`` in one line (OpenVINO
  would silently run fp32), and after compiling the precision OpenVINO reports is checked again;
- threads (``INFERENCE_NUM_THREADS``), streams (``NUM_STREAMS``) and the performance hint
  (``PERFORMANCE_HINT``: ``latency`` or ``throughput``) from ``OpenVinoConfig``;
- an optional compiled-model cache, **off by default**. It holds what OpenVINO's ``CACHE_DIR``
  holds (the compiled model, ``CompiledModel.export_model``), but this module writes and reads it
  itself so that nothing unverified is loaded: the blob ``.<stem>.ov-<key>.blob`` sits beside the
  file with a record ``.<stem>.ov-<key>.json`` that gives the blob's size and SHA-256 and the
  source's SHA-256. The key hashes the source's SHA-256, OpenVINO's version, the precision and the
  CPU (model and feature flags), so a changed file, runtime or machine never reads a stale blob. On
  load the blob's bytes are read once, checked against the record, and those same bytes are given
  to ``Core.import_model``; a blob without a matching record (planted, truncated, left by a crash)
  is never loaded: the model is compiled from the source and the cache written again. Both files
  are written through ``defr.files.atomic_path``. A folder that cannot be written to means no cache.
  ``benchmarks/openvino_load.py`` measures what it saves.

Inputs are fed from the CPU; each call takes an idle infer request (one per concurrent caller,
so several streams can serve several threads) and copies its outputs out.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from defr.choices import Precision
from defr.errors import ConfigError
from defr.files import atomic_path, write_json
from defr.jsonio import JsonInputError, read_json
from defr.machine import cpu_name
from defr.optional import import_openvino
from defr.runtime.contract import INPUT_NAMES, OUTPUT_NAMES, BackendError, RuntimeMeta
from defr.runtime.onnx_session import _cpu_flags  # the CPU features that decide the kernels
from defr.runtime.sidecar import Sidecar
from defr.runtime.tensorrt_backend import check_pairs

HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # INFERENCE_PRECISION_HINT; int8: the unquantized ops
CACHE_TAG = "ov"
CACHE_FORMAT = "defr-openvino-cache/1"


@dataclass(frozen=True)
class OpenVinoConfig:
    """How OpenVINO compiles and runs the graph on the CPU.

    threads: ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default, every core); streams:
    ``NUM_STREAMS``, how many calls may run at once (None: what the hint picks; ``latency`` picks
    one); hint: ``PERFORMANCE_HINT``, ``latency`` (one call as fast as possible) or ``throughput``
    (many calls at once); cache: read / write the verified compiled-model cache next to the file
    (module docstring).
    """

    threads: int | None = None
    streams: int | None = None
    hint: str = "latency"
    cache: bool = False

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"OpenVINO threads must be >= 1, not {self.threads}")
        if self.streams is not None and self.streams < 1:
            raise ConfigError(f"OpenVINO streams must be >= 1, not {self.streams}")
        if self.hint not in HINTS:
            raise ConfigError(f"OpenVINO performance hint must be one of {tuple(HINTS)}, not {self.hint!r}")

    def properties(self, precision: str) -> dict:
        """The OpenVINO CPU properties for ``precision`` (``fp32``, ``bf16`` on an fp32 file, or ``int8``)."""
        props = {"PERFORMANCE_HINT": HINTS[self.hint], "INFERENCE_PRECISION_HINT": OV_PRECISION[precision]}
        if self.threads is not None:
            props["INFERENCE_NUM_THREADS"] = self.threads
        if self.streams is not None:
            props["NUM_STREAMS"] = self.streams
        return props


def cpu_has_bf16(core) -> bool:
    """Whether OpenVINO's CPU plugin can run bf16 here (it lists ``BF16`` among its optimisation capabilities)."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoBackend:
    """An exported ``model.onnx`` (run at ``fp32``, or ``bf16`` by OpenVINO's hint) or ``model.int8.onnx``
    run by OpenVINO on the CPU: a compiled model, the export's ``Sidecar`` and the precision it runs at.

    ``OpenVinoBackend.open`` compiles a file the front door (``defr.runtime.registry.load_backend``,
    ``runtime="openvino"``) has checked against its sidecar, at the precision the door resolved.
    """

    accepts_no_pairs = False
    name = "openvino"

    def __init__(self, compiled, sidecar: Sidecar, precision: Precision, config: OpenVinoConfig):
        self.compiled = compiled
        self.sidecar = sidecar
        self.meta: RuntimeMeta = sidecar.meta
        self.mask_mode = sidecar.graph.mask_mode
        self.precision = precision
        self.config = config
        self.device = torch.device("cpu")
        self._idle: list = []
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls, path: str | os.PathLike, sidecar: Sidecar, sha256: str, precision: Precision, config: OpenVinoConfig
    ) -> OpenVinoBackend:
        """``path`` compiled for the CPU at ``precision`` (its SHA-256, checked by the door: ``sha256``).

        Raises ``BackendError`` for bf16 on a CPU without bf16 instructions (OpenVINO would silently
        run fp32), a file OpenVINO cannot compile, or a compiled precision other than the one asked.
        """
        core = import_openvino("the OpenVINO backend (--runtime openvino)").Core()
        if precision == "bf16" and not cpu_has_bf16(core):
            raise BackendError(
                f"{path}: bf16 asked, but this CPU ({cpu_name()}) has no bf16 instructions (OpenVINO lists "
                f"{', '.join(core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))}), so it would run fp32; "
                "use precision fp32, or model.int8.onnx"
            )
        compiled = _compile(core, Path(path), sha256, precision, config)
        got = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if got != OV_PRECISION[precision]:
            raise BackendError(f"{path}: asked OpenVINO for {precision}, it compiled for {got}")
        return cls(compiled, sidecar, precision, config)

    def __call__(self, images, boxes_h, boxes_o, pair_index) -> tuple[torch.Tensor, torch.Tensor]:
        check_pairs(images.shape[0], pair_index.shape[0])
        dtypes = (np.float32, np.float32, np.float32, np.int64)
        arrays = (images, boxes_h, boxes_o, pair_index)
        feeds = {n: x.detach().cpu().numpy().astype(t) for n, x, t in zip(INPUT_NAMES, arrays, dtypes, strict=True)}
        pair_logits, image_logits = self.run(feeds)
        return torch.from_numpy(pair_logits), torch.from_numpy(image_logits)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The graph's outputs (``OUTPUT_NAMES``, float32 copies) for numpy ``feeds`` named by
        ``INPUT_NAMES``, as ``onnxruntime.InferenceSession.run`` gives them."""
        with self._lock:
            request = self._idle.pop() if self._idle else self.compiled.create_infer_request()
        try:
            out = request.infer(feeds)
            return [np.array(out[self.compiled.output(n)], np.float32) for n in OUTPUT_NAMES]
        finally:
            with self._lock:
                self._idle.append(request)


def compile_model(core, path: str | os.PathLike, precision: str, config: OpenVinoConfig):
    """``path`` (an ONNX graph) read and compiled for the CPU at ``precision``, no cache."""
    try:
        return core.compile_model(core.read_model(str(path)), "CPU", config.properties(precision))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BackendError(f"{path}: OpenVINO cannot compile it ({first})") from None


def cache_key(source_sha256: str, precision: str) -> str:
    """16 hex digits naming the compiled-model cache of a source with SHA-256 ``source_sha256`` at
    ``precision`` under this OpenVINO on this CPU (threads, streams and hint are set at import)."""
    ov = import_openvino()
    parts = [source_sha256, ov.get_version(), precision, platform.machine(), cpu_name(), _cpu_flags()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def cache_paths(path: str | os.PathLike, key: str) -> tuple[Path, Path]:
    """(blob, record) of the cache of ``path`` with ``key``: hidden files in the same folder."""
    path = Path(path)
    stem = f".{path.stem}.{CACHE_TAG}-{key}"
    return path.with_name(f"{stem}.blob"), path.with_name(f"{stem}.json")


def _compile(core, path: Path, source_sha256: str, precision: str, config: OpenVinoConfig):
    if not config.cache:
        return compile_model(core, path, precision, config)
    key = cache_key(source_sha256, precision)
    blob_path, record_path = cache_paths(path, key)
    blob = read_verified_blob(blob_path, record_path, source_sha256, key)
    if blob is not None:
        try:
            return core.import_model(blob, "CPU", config.properties(precision))
        except RuntimeError:
            pass  # a verified blob OpenVINO still refuses: compiled again and rewritten below
    compiled = compile_model(core, path, precision, config)
    _write_cache(compiled, blob_path, record_path, source_sha256, key)
    return compiled


def read_verified_blob(blob_path: Path, record_path: Path, source_sha256: str, key: str) -> bytes | None:
    """The cached blob's bytes when its record names this source and key and the bytes have the
    record's size and SHA-256; None (compile from the source) for anything else."""
    if not (blob_path.is_file() and record_path.is_file()):
        return None
    try:
        record = read_json(record_path, max_bytes=1 << 16)
        blob = blob_path.read_bytes()
    except (OSError, JsonInputError):
        return None
    expected = {"format": CACHE_FORMAT, "key": key, "source_sha256": source_sha256}
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in expected.items()):
        return None
    if record.get("blob_size") != len(blob) or record.get("blob_sha256") != hashlib.sha256(blob).hexdigest():
        return None
    return blob


def _write_cache(compiled, blob_path: Path, record_path: Path, source_sha256: str, key: str) -> None:
    """The compiled model as the cache's blob and record; the record last, so a blob is never
    listed before it is whole. A folder that cannot be written to: no cache."""
    stream = io.BytesIO()
    compiled.export_model(stream)
    blob = stream.getvalue()
    record = {
        "format": CACHE_FORMAT,
        "key": key,
        "source_sha256": source_sha256,
        "blob_size": len(blob),
        "blob_sha256": hashlib.sha256(blob).hexdigest(),
    }
    try:
        with atomic_path(blob_path) as tmp, open(tmp, "wb") as f:
            f.write(blob)
        write_json(record, record_path)
    except OSError:
        return
