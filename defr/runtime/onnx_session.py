"""ONNX Runtime sessions for exported DEFR graphs: the options that pay off, and an optional optimised-model cache.

One function builds every session the project runs (``OnnxBackend``, the exporter's verification
and int8 gate), so the options measured in ``docs/benchmarks.md`` (§ ONNX Runtime session options)
are the ones used:

- graph optimisation level ``all`` (ONNX Runtime's default). For fp32 graphs the level hardly
  matters (within 5 %), for QDQ int8 graphs it is what fuses DequantizeLinear → MatMul into integer
  kernels: ``basic`` or ``disable`` run them 2.7–3.3× slower;
- intra-op threads from ``threads`` (None: ONNX Runtime's default, one per physical core), one
  inter-op thread (the graph is a chain);
- memory pattern planning on (ONNX Runtime's default; on or off measured the same);
- thread spinning: ONNX Runtime's default unless ``spinning`` says otherwise (measured the same
  on an idle machine; off leaves the cores to other work on a shared one);
- an optimised-model cache, **off by default**: with ``cache=True`` the graph as ONNX Runtime
  optimised it is written next to the file (``.<name>.ort-<key>.onnx``) and loaded, already
  optimised, the next time. Measured, it saves 7–40 ms of session creation (ViT-B/32 at 672 px:
  0.240 → 0.222 s fp32, 0.117 → 0.077 s int8) for a second copy of the weights on disk and a slower
  first load, so it does not pay for these graphs. The key hashes the source file's SHA-256, the
  ONNX Runtime version, the optimisation level and the CPU (the NCHWc layout depends on the vector
  width), so a changed file, runtime or machine never reads a stale cache; the cached graph is
  stored with a record of its own SHA-256 and its source's (``defr.runtime.derived``) and is loaded
  only when both match, so a planted, truncated or foreign ``.model.ort-<key>.onnx`` is rebuilt,
  never run. Only for the CPU provider; a folder that cannot be written to just means no cache.

``onnxruntime`` is an optional dependency, imported through ``defr.optional``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path

from defr.errors import ConfigError
from defr.machine import cpu_name
from defr.optional import import_onnxruntime
from defr.runtime.derived import commit_derivative, verified_derivative
from defr.runtime.sidecar import sha256

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
CPU_PROVIDERS = ["CPUExecutionProvider"]
CACHE_TAG = "ort"


@dataclass(frozen=True)
class SessionConfig:
    """How an ONNX Runtime session is set up (module docstring: what each option does).

    threads: intra-op threads (None: ONNX Runtime's default); optimization: one of
    ``OPTIMIZATION_LEVELS``; cache: read / write the optimised-model cache next to the file (CPU
    provider only); memory_pattern: ONNX Runtime's memory pattern planning; spinning: whether idle
    intra-op threads spin (None: ONNX Runtime's default, on).
    """

    threads: int | None = None
    optimization: str = "all"
    cache: bool = False
    memory_pattern: bool = True
    spinning: bool | None = None

    def __post_init__(self) -> None:
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise ConfigError(f"optimization must be one of {OPTIMIZATION_LEVELS}, not {self.optimization!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, not {self.threads}")


def session_options(cfg: SessionConfig, optimized_model_path: str | os.PathLike | None = None):
    """``onnxruntime.SessionOptions`` for ``cfg``; with ``optimized_model_path``, ONNX Runtime writes
    the optimised graph there while it creates the session."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    levels = ort.GraphOptimizationLevel
    options.graph_optimization_level = {
        "disable": levels.ORT_DISABLE_ALL,
        "basic": levels.ORT_ENABLE_BASIC,
        "extended": levels.ORT_ENABLE_EXTENDED,
        "all": levels.ORT_ENABLE_ALL,
    }[cfg.optimization]
    if cfg.threads is not None:
        options.intra_op_num_threads = cfg.threads
    options.inter_op_num_threads = 1
    options.enable_mem_pattern = cfg.memory_pattern
    if cfg.spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if cfg.spinning else "0")
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    return options


def cache_key(file_sha256: str, cfg: SessionConfig) -> str:
    """16 hex digits naming the cache of a file with SHA-256 ``file_sha256`` under ``cfg`` on this machine."""
    ort = import_onnxruntime()
    parts = [file_sha256, ort.__version__, cfg.optimization, platform.machine(), cpu_name(), _cpu_flags()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def cache_path(path: str | os.PathLike, key: str) -> Path:
    """Where the optimised graph of ``path`` with ``key`` lives: a hidden file in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{CACHE_TAG}-{key}.onnx")


def make_session(
    path: str | os.PathLike,
    providers: list[str] | None = None,
    cfg: SessionConfig | None = None,
    file_sha256: str | None = None,
):
    """An ``onnxruntime.InferenceSession`` for ``path`` with ``cfg``'s options.

    providers: execution providers in priority order (None: the CPU provider). With the CPU provider
    alone and ``cfg.cache``, the optimised graph is read from the cache next to ``path`` when present
    and written there otherwise. file_sha256: the file's SHA-256 when the caller has it already
    (the backends check it against the sidecar), to key the cache without hashing the file again.
    """
    ort = import_onnxruntime()
    cfg = cfg or SessionConfig()
    providers = list(providers) if providers is not None else list(CPU_PROVIDERS)
    path = Path(path)
    if not (cfg.cache and cfg.optimization != "disable" and providers == CPU_PROVIDERS):
        return ort.InferenceSession(str(path), session_options(cfg), providers=providers)
    source_sha256 = file_sha256 or sha256(path)
    cached = cache_path(path, cache_key(source_sha256, cfg))
    if verified_derivative(cached, source_sha256):
        # Already optimised: loading it without the passes gives the same graph (measured: same outputs, same speed).
        options = session_options(SessionConfig(cfg.threads, "disable", False, cfg.memory_pattern, cfg.spinning))
        return ort.InferenceSession(str(cached), options, providers=providers)
    return _session_writing_cache(path, cached, source_sha256, providers, cfg)


def _session_writing_cache(path: Path, cached: Path, source_sha256: str, providers: list[str], cfg: SessionConfig):
    """A session for ``path``; ONNX Runtime writes its optimised graph to a temporary file that is
    committed onto ``cached`` with its record (no cache when the folder is not writable)."""
    ort = import_onnxruntime()
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{cached.name}.", suffix=".tmp.onnx")
        os.close(fd)
    except OSError:
        return ort.InferenceSession(str(path), session_options(cfg), providers=providers)
    try:
        options = session_options(cfg, tmp)
        options.log_severity_level = 3  # not the warning that the cache is specific to this machine: that is its key
        session = ort.InferenceSession(str(path), options, providers=providers)
        if Path(tmp).stat().st_size > 0:
            with contextlib.suppress(OSError):  # a folder that refuses the cache's record: no cache
                commit_derivative(tmp, cached, source_sha256)
        return session
    finally:
        Path(tmp).unlink(missing_ok=True)


def _cpu_flags() -> str:
    """The CPU's feature flags (x86 /proc/cpuinfo), which decide the kernels and layouts ONNX Runtime picks."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    return platform.processor()
