"""TensorRT engine from an exported ONNX graph (TensorRT 10.x and 11.x Python API).

Written against NVIDIA's documented API and NOT run here: no TensorRT or GPU was available. The
pure-Python parts (profile shapes, argument checks, the missing-package error) are tested.

- ``pip install tensorrt`` now resolves TensorRT 11, which builds strongly typed networks only: the
  FP16 / INT8 builder flags (weak typing; deprecated since 10.12) are removed. So the network is
  strongly typed (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``) on 10.x and 11.x alike and
  precision comes from the graph: an fp16 engine is built from ``model.fp16.onnx`` (float16 compute,
  float32 box arithmetic and I/O) and an fp32 engine from ``model.onnx``. Networks are always
  explicit-batch since TensorRT 10, so no explicit-batch flag is passed.
- One optimisation profile: B in [1, max_batch], P in [1, max_pairs]. The runtime never calls an
  engine with P = 0 (``HOIDetector`` passes one dummy pair instead).
- A timing cache (``model.timing.cache`` in the output folder) is read when present and written
  after the build, so rebuilding on the same GPU skips most kernel timing.
- With ``plugin`` (``--plugin``): the graph's ``defr::PairMaskedAttention`` node becomes the
  Triton kernel through TensorRT's Python plugin API (``defr.kernels.tensorrt_plugin``,
  registered before parsing; its AOT implementation is compiled into the engine, which then runs
  without Python; TensorRT >= 10.9). With ``plugin_library`` instead, a compiled plugin library
  that provides ``defr::PairMaskedAttention`` is loaded into TensorRT's plugin registry.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from defr.choices import ENGINE_PRECISIONS
from defr.errors import DefrError
from defr.export.errors import ExportError
from defr.optional import TENSORRT_WORDS, import_tensorrt
from defr.runtime.sidecar import EngineInfo
from defr.runtime.tensorrt_backend import load_plugin_library

TIMING_CACHE_NAME = "model.timing.cache"
OPT_BATCH = 4  # a partly filled frame batch
OPT_PAIRS_PER_IMAGE = 16  # a typical frame after the 0.2 score threshold and the 15 + 15 box cap

__all__ = ["EngineConfig", "build_engine", "engine_info", "optimization_profile_shapes"]

Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]  # input name → (min, opt, max)


@dataclass
class EngineConfig:
    """precision: ``fp32`` or ``fp16``; B in [1, max_batch] and P in [1, max_pairs] per call;
    plugin: the graph has a ``PairMaskedAttention`` node, run by the built-in plugin, or by the
    compiled ``plugin_library`` when one is given."""

    precision: str
    image_size: int
    max_batch: int = 8
    max_pairs: int = 1024
    plugin: bool = False
    plugin_library: Path | None = None

    def __post_init__(self) -> None:
        if self.precision not in ENGINE_PRECISIONS:
            raise ExportError(f"engine precision must be one of {ENGINE_PRECISIONS}, not {self.precision!r}")
        check_limits(self.image_size, self.max_batch, self.max_pairs)
        if self.plugin_library is not None and not self.plugin:
            raise ExportError("a plugin library applies to a graph with the plugin node (--plugin)")
        if self.plugin_library is not None and not Path(self.plugin_library).is_file():
            raise ExportError(f"plugin library {self.plugin_library}: no such file")

    @property
    def plugin_kind(self) -> str | None:
        """How the engine runs the plugin node: ``qdp-aot`` (built in), ``library``, or None (no node)."""
        if not self.plugin:
            return None
        return "library" if self.plugin_library is not None else "qdp-aot"

    @property
    def file_name(self) -> str:
        return f"model.{self.precision}.engine"

    @property
    def onnx_name(self) -> str:
        """The graph the engine is parsed from: its precision is in the graph (strong typing)."""
        return "model.onnx" if self.precision == "fp32" else f"model.{self.precision}.onnx"


def check_limits(image_size: int, max_batch: int, max_pairs: int) -> None:
    if image_size < 1:
        raise ExportError(f"image size must be >= 1, not {image_size}")
    if max_batch < 1:
        raise ExportError(f"max batch must be >= 1, not {max_batch}")
    if max_pairs < 1:
        raise ExportError(f"max pairs must be >= 1, not {max_pairs} (P = 0 frames never reach the engine)")


def optimization_profile_shapes(image_size: int, max_batch: int, max_pairs: int) -> Profile:
    """(min, opt, max) shape of each graph input: B in [1, max_batch], P in [1, max_pairs].

    opt: B = min(max_batch, 4), P = min(max_pairs, 16 · opt B).
    """
    check_limits(image_size, max_batch, max_pairs)
    opt_b = min(max_batch, OPT_BATCH)
    opt_p = min(max_pairs, OPT_PAIRS_PER_IMAGE * opt_b)
    s = image_size
    return {
        "images": ((1, 3, s, s), (opt_b, 3, s, s), (max_batch, 3, s, s)),
        "boxes_h": ((1, 4), (opt_p, 4), (max_pairs, 4)),
        "boxes_o": ((1, 4), (opt_p, 4), (max_pairs, 4)),
        "pair_index": ((1,), (opt_p,), (max_pairs,)),
    }


def engine_info(cfg: EngineConfig) -> EngineInfo:
    """The sidecar's record of the engine ``cfg`` builds: its file, profile and plugin."""
    library = str(Path(cfg.plugin_library).resolve()) if cfg.plugin_library is not None else None
    return EngineInfo(
        cfg.file_name,
        optimization_profile_shapes(cfg.image_size, cfg.max_batch, cfg.max_pairs),
        cfg.plugin_kind,
        library,
    )


def register_builtin_plugin(trt_version: str, onnx_path: str | os.PathLike) -> None:
    """Register ``defr::PairMaskedAttention`` (the Triton kernel, AOT) with TensorRT, after checking
    the graph's plugin nodes against TensorRT ``trt_version``; ExportError (one line) when TensorRT
    is too old for a node, a node's attributes are wrong, or Triton is missing."""
    import onnx

    from defr.export.plugin_node import plugin_node_attributes
    from defr.kernels.tensorrt_plugin import check_onnx_node, register_plugin

    name = Path(onnx_path).name
    try:
        for attributes in plugin_node_attributes(onnx.load(str(onnx_path), load_external_data=False)):
            check_onnx_node(trt_version, attributes)
    except DefrError as e:
        raise ExportError(f"{name}: {e}") from None
    try:
        register_plugin(aot=True)
    except (DefrError, ImportError) as e:
        raise ExportError(f"the built-in PairMaskedAttention plugin cannot be registered: {e}") from None


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    cfg: EngineConfig,
    timing_cache: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Parse ``onnx_path``, build a serialized engine for ``cfg`` and write it to ``engine_path``.

    timing_cache: a timing cache file, read when it exists and (re)written after the build.
    """
    trt = import_tensorrt(f"building a TensorRT engine (--engine; {TENSORRT_WORDS})")
    logger = trt.Logger(trt.Logger.WARNING)
    if cfg.plugin_kind == "library":
        load_plugin_library(trt, logger, cfg.plugin_library)
    elif cfg.plugin_kind == "qdp-aot":
        register_builtin_plugin(trt.__version__, onnx_path)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {Path(onnx_path).name}: {errors}")
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in optimization_profile_shapes(cfg.image_size, cfg.max_batch, cfg.max_pairs).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    cache_bytes = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cache_bytes), False)
    log(f"building the {cfg.precision} TensorRT engine (minutes) ...")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build the {cfg.precision} engine (its log above says why)")
    engine_path = Path(engine_path)
    engine_path.write_bytes(bytes(serialized))
    if cache_path is not None:
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return engine_path
