"""The TensorRT engine builder without TensorRT: profiles, argument checks, the missing-package error, and
the build sequence against a stand-in for the part of the TensorRT 10 API it uses (no GPU here)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

from defr.export.errors import ExportError
from defr.export.tensorrt_build import EngineConfig, build_engine, engine_info, optimization_profile_shapes
from defr.kernels import PairOp
from defr.optional import TENSORRT_WORDS, MissingDependency
from defr.runtime import load_backend
from defr.runtime.contract import BackendError
from defr.runtime.tensorrt_backend import TensorRTBackend


def test_profile_covers_one_to_max_with_opt_inside():
    shapes = optimization_profile_shapes(672, max_batch=8, max_pairs=1024)
    assert set(shapes) == {"images", "boxes_h", "boxes_o", "pair_index"}
    lo, opt, hi = shapes["images"]
    assert lo == (1, 3, 672, 672) and hi == (8, 3, 672, 672) and 1 <= opt[0] <= 8 and opt[1:] == (3, 672, 672)
    for name in ("boxes_h", "boxes_o"):
        lo, opt, hi = shapes[name]
        assert lo == (1, 4) and hi == (1024, 4) and 1 <= opt[0] <= 1024 and opt[1] == 4
    assert [s[0] for s in shapes["pair_index"]] == [s[0] for s in shapes["boxes_h"]]
    assert shapes["boxes_h"][1][0] >= shapes["images"][1][0]  # at least one pair per image at the opt point


@pytest.mark.parametrize(("max_batch", "max_pairs"), [(1, 1), (1, 5), (64, 3), (2, 10_000)])
def test_profile_opt_never_exceeds_max(max_batch, max_pairs):
    shapes = optimization_profile_shapes(224, max_batch, max_pairs)
    for lo, opt, hi in shapes.values():
        assert all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True))
    assert shapes["images"][2][0] == max_batch and shapes["pair_index"][2][0] == max_pairs


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_pairs": 0}, "max pairs must be >= 1, not 0"),
        ({"max_batch": 0}, "max batch must be >= 1, not 0"),
        ({"image_size": 0}, "image size must be >= 1"),
    ],
)
def test_profile_rejects_bad_limits(kwargs, message):
    args = {"image_size": 224, "max_batch": 8, "max_pairs": 64, **kwargs}
    with pytest.raises(ExportError, match=message):
        optimization_profile_shapes(**args)
    with pytest.raises(ExportError, match=message):
        EngineConfig("fp16", **args)


def test_engine_config_checks_precision_and_plugin(tmp_path):
    with pytest.raises(ExportError, match="engine precision must be one of"):
        EngineConfig("int8", 224)
    with pytest.raises(ExportError, match="no such file"):
        EngineConfig("fp16", 224, plugin=True, plugin_library=tmp_path / "libdefr_plugins.so")
    with pytest.raises(ExportError, match="applies to a graph with the plugin node"):
        EngineConfig("fp16", 224, plugin_library=tmp_path / "libdefr_plugins.so")
    assert EngineConfig("fp16", 224).plugin_kind is None
    assert EngineConfig("fp16", 224, plugin=True).plugin_kind == "qdp-aot"
    assert (EngineConfig("fp16", 224).file_name, EngineConfig("fp16", 224).onnx_name) == (
        "model.fp16.engine",
        "model.fp16.onnx",
    )
    assert EngineConfig("fp32", 224).onnx_name == "model.onnx"


def test_missing_tensorrt_names_the_package(monkeypatch, tmp_path):
    """One message form (defr.optional), naming TensorRT 10.x and 11.x and the extra, for the builder
    and the backend alike."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    cfg = EngineConfig("fp32", 224)
    with pytest.raises(MissingDependency, match=r"'tensorrt' .*pip install \"defr\[gpu\]\"") as built:
        build_engine(tmp_path / "model.onnx", tmp_path / "model.fp32.engine", cfg, log=lambda m: None)
    with pytest.raises(MissingDependency, match=r"'tensorrt' .*pip install \"defr\[gpu\]\"") as loaded:
        load_backend(tmp_path / "model.fp32.engine")
    for e in (built, loaded):
        assert TENSORRT_WORDS in str(e.value) and "TensorRT 10.x and 11.x" in str(e.value)


def fake_tensorrt(parse_ok: bool = True, build_ok: bool = True) -> tuple[SimpleNamespace, dict]:
    """A stand-in for the calls ``build_engine`` makes (TensorRT 10 names), recording them."""
    calls: dict = {}

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class Cache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return self.data + b"+timed"

    class Config:
        def __init__(self):
            self.profiles, self.cache = [], None

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def create_timing_cache(self, data):
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache

        def get_timing_cache(self):
            return self.cache

    class Parser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls["parsed"] = path
            return parse_ok

        def get_error(self, i):
            return "In node 7 (PairMaskedAttention): no plugin creator"

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls["network_flags"] = flags
            return object()

        def create_builder_config(self):
            calls["config"] = Config()
            return calls["config"]

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"serialized engine" if build_ok else None

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    registry = SimpleNamespace(load_library=lambda path: calls.setdefault("library", path))
    trt = SimpleNamespace(
        Logger=Logger,
        Builder=Builder,
        OnnxParser=Parser,
        NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=5),
        init_libnvinfer_plugins=lambda logger, namespace: calls.setdefault("nvinfer_plugins", namespace),
        get_plugin_registry=lambda: registry,
    )
    return trt, calls


def test_build_sequence(monkeypatch, tmp_path):
    trt, calls = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    (tmp_path / "model.fp16.onnx").write_bytes(b"onnx")
    cache = tmp_path / "model.timing.cache"
    cache.write_bytes(b"earlier")
    library = tmp_path / "libdefr_plugins.so"
    library.write_bytes(b"\x7fELF")
    cfg = EngineConfig("fp16", 224, max_batch=4, max_pairs=100, plugin=True, plugin_library=library)
    out = build_engine(tmp_path / cfg.onnx_name, tmp_path / cfg.file_name, cfg, cache, log=lambda m: None)
    assert out.read_bytes() == b"serialized engine"
    assert calls["parsed"] == str(tmp_path / "model.fp16.onnx")
    assert calls["network_flags"] == 1 << 5  # strongly typed: the precision is the graph's
    assert calls["library"] == str(library) and calls["nvinfer_plugins"] == ""
    (profile,) = calls["config"].profiles
    assert profile.shapes == optimization_profile_shapes(224, 4, 100)
    assert cache.read_bytes() == b"earlier+timed"  # the cache was loaded, then written back


def test_build_errors_are_export_errors(monkeypatch, tmp_path):
    cfg = EngineConfig("fp32", 224)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(parse_ok=False)[0])
    with pytest.raises(ExportError, match="cannot parse model.onnx: In node 7"):
        build_engine(tmp_path / "model.onnx", tmp_path / "model.fp32.engine", cfg, log=lambda m: None)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(build_ok=False)[0])
    with pytest.raises(ExportError, match="could not build the fp32 engine"):
        build_engine(tmp_path / "model.onnx", tmp_path / "model.fp32.engine", cfg, log=lambda m: None)
    assert not (tmp_path / "model.fp32.engine").exists()


def _graph_with_plugin_node(path, **attributes) -> None:
    """A one-node ONNX file: PairMaskedAttention (domain defr) with ``attributes``."""
    import onnx
    from onnx import TensorProto, helper

    names = ("q_cls", "k", "v", "boxes_h", "boxes_o", "pair_index")
    types = [TensorProto.FLOAT] * 5 + [TensorProto.INT64]
    node = helper.make_node("PairMaskedAttention", list(names), ["out"], domain="defr", **attributes)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, t, None) for n, t in zip(names, types, strict=True)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def test_builtin_plugin_refuses_a_node_tensorrt_cannot_take(monkeypatch, tmp_path):
    """The graph's PairMaskedAttention nodes are checked against the installed TensorRT before parsing."""
    from defr.export.plugin_node import node_attributes

    trt, calls = fake_tensorrt()
    trt.__version__ = "10.10.0.31"
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    cfg = EngineConfig("fp16", 224, plugin=True)
    attrs = node_attributes(PairOp(heads=12, grid_size=14, image_size=224, mask_mode="hard"))
    for bad, message in [
        ({k: v for k, v in attrs.items() if k != "mask_mode"}, r"lacks the attribute\(s\) \['mask_mode'\]"),
        (attrs | {"mask_mode": "soft"}, "mask_mode"),
        (attrs | {"image_size": 200}, "image_size 200 must be a positive multiple of grid_size 14"),
    ]:
        _graph_with_plugin_node(tmp_path / cfg.onnx_name, **bad)
        with pytest.raises(ExportError, match=f"{cfg.onnx_name}: .*{message}"):
            build_engine(tmp_path / cfg.onnx_name, tmp_path / cfg.file_name, cfg, log=lambda m: None)
    assert "parsed" not in calls


def test_builtin_plugin_needs_a_new_enough_tensorrt(monkeypatch, tmp_path):
    """--plugin --engine registers defr::PairMaskedAttention through tensorrt.plugin: 10.9+ for its AOT part."""
    from defr.export.plugin_node import node_attributes

    trt, calls = fake_tensorrt()
    trt.__version__ = "10.8.0.43"
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    cfg = EngineConfig("fp16", 224, plugin=True)
    _graph_with_plugin_node(tmp_path / cfg.onnx_name, **node_attributes(PairOp(12, 14, 224, "hard")))
    with pytest.raises(ExportError, match=r"model.fp16.onnx: an AOT plugin .* needs TensorRT >= 10.9, found 10.8"):
        build_engine(tmp_path / cfg.onnx_name, tmp_path / cfg.file_name, cfg, log=lambda m: None)
    assert "parsed" not in calls  # refused before parsing


class _FakeEngine:
    """What ``TensorRTBackend`` asks of a deserialized engine (no GPU here)."""

    def create_execution_context(self):
        return object()

    def get_tensor_dtype(self, name):
        return SimpleNamespace(name="INT64" if name == "pair_index" else "FLOAT")


def test_backend_reads_the_engine_record_as_typed_fields(tiny_model):
    """The profile limits and the plugin come from the sidecar's typed EngineInfo that the exporter wrote."""
    from defr.export.sidecar import model_sidecar
    from defr.runtime.sidecar import Digest, FileEntry, Sidecar

    cfg = EngineConfig("fp16", 64, max_batch=3, max_pairs=50, plugin=True)
    info = engine_info(cfg)
    assert (info.file, info.max_batch, info.max_pairs, info.plugin) == ("model.fp16.engine", 3, 50, "qdp-aot")
    files = {"model.fp16.engine": FileEntry("fp16", Digest(9, "0" * 64))}
    sidecar = model_sidecar(tiny_model, files, opset=18, plugin=True, mask_mode="hard", source={}, engine=info)
    read = Sidecar.from_dict(sidecar.to_dict())
    assert read.engine == info and read == sidecar
    backend = TensorRTBackend(_FakeEngine(), read, "fp16", "cuda")
    assert (backend.max_batch, backend.max_pairs, backend.meta) == (3, 50, sidecar.meta)
    with pytest.raises(BackendError, match="exceeds the engine's max batch 3"):
        backend(torch.zeros(4, 3, 64, 64), torch.zeros(1, 4), torch.zeros(1, 4), torch.zeros(1, dtype=torch.long))
