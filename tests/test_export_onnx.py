"""The exported ONNX pair graph: inputs/outputs, dynamic shapes, ONNX Runtime vs PyTorch, fp16, the plugin node."""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from defr.export.errors import ExportError
from defr.export.fp16 import convert_to_fp16
from defr.export.onnx_export import export_onnx, max_opset
from defr.export.verify import TOLERANCES, VerificationError, check_graph, compare_with_torch, feeds, ort_session
from defr.kernels import PairOp
from defr.model import create_model, pair_masks
from defr.optional import MissingDependency
from defr.runtime.contract import INPUT_NAMES, OUTPUT_NAMES, example_inputs

ort = pytest.importorskip("onnxruntime")
SHAPES = [(1, 1), (1, 7), (1, 225), (3, 1), (3, 7), (3, 225)]  # (B, P)


@pytest.fixture(scope="module")
def model():
    return create_model("tiny-vit", 64)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """model.onnx and model.fp16.onnx of the tiny model (one export for the whole module)."""
    folder = tmp_path_factory.mktemp("export")
    path = export_onnx(model, folder / "model.onnx")
    onnx.save(convert_to_fp16(onnx.load(str(path))), str(folder / "model.fp16.onnx"))
    return {"fp32": path, "fp16": folder / "model.fp16.onnx"}


@pytest.fixture(scope="module")
def plugin_graph(model, tmp_path_factory):
    path = export_onnx(model, tmp_path_factory.mktemp("plugin") / "model.onnx", plugin=True)
    return onnx.load(str(path)), path


def _torch(model, inputs):
    with torch.no_grad():
        return [t.numpy() for t in model.forward_pairs(*inputs, with_image_logits=True)]


def _elem_type(value: onnx.ValueInfoProto) -> int:
    return value.type.tensor_type.elem_type


def _dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.slow
def test_graph_inputs_outputs_and_standard_ops(exported):
    graph = onnx.load(str(exported["fp32"])).graph
    inputs = {v.name: v for v in graph.input}
    outputs = {v.name: v for v in graph.output}
    assert list(inputs) == list(INPUT_NAMES) and list(outputs) == list(OUTPUT_NAMES)
    assert _dims(inputs["images"]) == ["B", 3, 64, 64]
    assert _dims(inputs["boxes_h"]) == _dims(inputs["boxes_o"]) == ["P", 4]
    assert _dims(inputs["pair_index"]) == ["P"]
    assert _dims(outputs["pair_logits"]) == ["P", 600] and _dims(outputs["image_logits"]) == ["B", 600]
    assert _elem_type(inputs["pair_index"]) == onnx.TensorProto.INT64
    assert {_elem_type(v) for v in [*graph.output, *graph.input] if v.name != "pair_index"} == {onnx.TensorProto.FLOAT}
    assert {n.domain for n in graph.node} == {""}  # standard ops only
    check_graph(exported["fp32"])


@pytest.mark.slow
def test_one_file_many_shapes_matches_pytorch(model, exported):
    session = ort_session(exported["fp32"])
    for k, (b, p) in enumerate(SHAPES):
        inputs = example_inputs(64, b, p, seed=10 + k)
        got = session.run(list(OUTPUT_NAMES), feeds(inputs))
        for g, r in zip(got, _torch(model, inputs), strict=True):
            assert g.shape == r.shape
            assert np.abs(g - r).max() <= TOLERANCES["fp32"].limit, (b, p)


@pytest.mark.slow
def test_fp16_graph_runs_on_cpu_within_tolerance(model, exported):
    proto = onnx.load(str(exported["fp16"]))
    assert {_elem_type(v) for v in proto.graph.output} == {onnx.TensorProto.FLOAT}
    assert _elem_type(proto.graph.input[0]) == onnx.TensorProto.FLOAT
    elements = Counter()
    for t in proto.graph.initializer:
        elements[t.data_type] += int(np.prod(t.dims))
    # the weights of the image path are stored in float16; the classifier (normalised by weight-only
    # nodes) and a few box constants stay float32
    assert elements[onnx.TensorProto.FLOAT16] > 0.9 * (
        elements[onnx.TensorProto.FLOAT16] + elements[onnx.TensorProto.FLOAT]
    )
    check_graph(exported["fp16"])
    result = compare_with_torch(exported["fp16"], model, "fp16", shapes=tuple(SHAPES))
    assert result.passed, result.error
    assert max(result.max_abs.values()) > 1e-5  # it really computes in float16


@pytest.mark.slow
def test_fp16_keeps_box_edges_exact(model, exported):
    """Box edges a hair past a patch border (16 px here): in float16 they round onto the border and the
    pair sees one patch row or column more or less. The float16 graph keeps box arithmetic in float32."""
    images = example_inputs(64, 1, 1)[0]
    boxes_h = torch.tensor([[0.0, 0.0, 16.005, 32.005], [0.0, 16.005, 32.005, 47.99]])
    boxes_o = torch.tensor([[47.99, 47.99, 63.0, 63.0], [31.995, 0.0, 63.0, 16.005]])
    index = torch.zeros(2, dtype=torch.long)
    assert (
        pair_masks(boxes_h, boxes_o, 64, 16) != pair_masks(boxes_h.half().float(), boxes_o.half().float(), 64, 16)
    ).any()
    reference = _torch(model, (images, boxes_h, boxes_o, index))[0]
    rounded = _torch(model, (images, boxes_h.half().float(), boxes_o.half().float(), index))[0]
    limit = TOLERANCES["fp16"].limit * np.abs(reference).max()
    assert np.abs(rounded - reference).max() > limit  # the test can tell the two apart
    got = ort_session(exported["fp16"]).run(["pair_logits"], feeds((images, boxes_h, boxes_o, index)))[0]
    assert np.abs(got - reference).max() <= limit


@pytest.mark.slow
def test_verification_reports_disagreement(model, exported):
    other = create_model("tiny-vit", 64, seed=1)
    result = compare_with_torch(exported["fp32"], other, "fp32", shapes=((1, 1),))
    assert not result.passed and result.error["pair_logits"] > 1e-2


@pytest.mark.slow
def test_checker_failure_is_a_verification_error(exported, tmp_path):
    proto = onnx.load(str(exported["fp32"]))
    proto.graph.node[0].input[0] = "no_such_value"
    onnx.save(proto, str(tmp_path / "broken.onnx"))
    with pytest.raises(VerificationError, match="broken.onnx: onnx.checker failed"):
        check_graph(tmp_path / "broken.onnx")


@pytest.mark.slow
def test_verification_without_onnxruntime(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependency, match=r"--no-verify.*'onnxruntime'.*pip install \"defr\[export\]\""):
        ort_session(exported["fp32"])


@pytest.mark.slow
def test_plugin_graph_has_one_custom_node(plugin_graph, exported):
    proto, path = plugin_graph
    custom = [n for n in proto.graph.node if n.domain]
    assert [(n.domain, n.op_type) for n in custom] == [("defr", "PairMaskedAttention")]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in custom[0].attribute}
    assert attrs == {
        "grid_size": 4,
        "heads": 3,
        "image_size": 64,
        "mask_mode": b"hard",
        "plugin_namespace": b"defr",
        "plugin_version": b"1",
        "aot": 1,
    }
    (function,) = proto.functions  # the node's math in standard ops, for runtimes without the plugin
    assert (function.domain, function.name) == ("defr", "PairMaskedAttention")
    assert list(function.input) == ["q_cls__in", "k__in", "v__in", "boxes_h", "boxes_o", "pair_index"]
    assert not any(n.domain for n in function.node)
    decomposed = onnx.load(str(exported["fp32"]))
    softmax = Counter(n.op_type for n in proto.graph.node)["Softmax"]
    # the first L-1 blocks keep their softmax; the last block's CLS softmax is inside the plugin node
    assert softmax == Counter(n.op_type for n in decomposed.graph.node)["Softmax"] - 1 == 3
    assert ("defr", 1) in {(o.domain, o.version) for o in proto.opset_import}
    check_graph(path)


@pytest.mark.slow
def test_plugin_fp16_graph_keeps_boxes_float32(plugin_graph, tmp_path):
    proto = convert_to_fp16(plugin_graph[0])
    onnx.save(proto, str(tmp_path / "model.fp16.onnx"))
    check_graph(tmp_path / "model.fp16.onnx")  # the node's schema demands float32 boxes
    typed = onnx.shape_inference.infer_shapes(proto).graph
    types = {v.name: _elem_type(v) for v in [*typed.value_info, *typed.input]}
    node = next(n for n in proto.graph.node if n.domain == "defr")
    half, single = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    assert [types[name] for name in node.input] == [half, half, half, single, single, onnx.TensorProto.INT64]


@pytest.mark.slow
@pytest.mark.parametrize("mask_mode", ["hard", "released"])
def test_plugin_graph_runs_in_onnx_runtime_and_equals_the_plain_graph(
    model, exported, plugin_graph, tmp_path, mask_mode
):
    """ONNX Runtime has no PairMaskedAttention kernel: it runs the model-local function."""
    if mask_mode == "hard":  # the module's graphs are exported in the default mode
        plain, plugin = exported["fp32"], plugin_graph[1]
    else:
        plain = export_onnx(model, tmp_path / "plain.onnx", mask_mode=mask_mode)
        plugin = export_onnx(model, tmp_path / "plugin.onnx", plugin=True, mask_mode=mask_mode)
    check_graph(plugin)
    sessions = [ort_session(plain), ort_session(plugin)]
    for b, p in [(1, 1), (3, 7), (2, 40)]:
        images, boxes_h, boxes_o, index = example_inputs(64, b, p, seed=b * p)
        order = torch.randperm(p, generator=torch.Generator().manual_seed(p))
        inputs = (images, boxes_h[order], boxes_o[order], index[order])
        want, got = (s.run(None, feeds(inputs)) for s in sessions)
        for g, w in zip(got, want, strict=True):
            assert np.abs(g - w).max() <= 1e-5 * max(1.0, np.abs(w).max())
        torch_out = _torch_mode(model, inputs, mask_mode)
        assert max(np.abs(g - t).max() for g, t in zip(got, torch_out, strict=True)) <= 1e-4


def _torch_mode(model, inputs, mask_mode: str) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in model.forward_pairs(*inputs, with_image_logits=True, mask_mode=mask_mode)]


@pytest.mark.slow
def test_plugin_node_attributes_read_back_from_the_graph(model, plugin_graph):
    """What the engine builder checks against the TensorRT version (defr.export.tensorrt_build)."""
    from defr.export.plugin_node import node_attributes, plugin_node_attributes

    vit = model.cfg.backbone.vit
    (found,) = plugin_node_attributes(plugin_graph[0])
    want = node_attributes(PairOp(vit.heads, vit.grid_size, vit.image_size, "hard"))
    assert {k: v.decode() if isinstance(v, bytes) else v for k, v in found.items()} == want
    assert plugin_node_attributes(onnx.load(str(export_onnx(model, plugin_graph[1].with_name("plain.onnx"))))) == []


@pytest.mark.slow
def test_plugin_fp16_graph_runs_in_onnx_runtime(model, plugin_graph, tmp_path):
    path = tmp_path / "model.fp16.onnx"
    onnx.save(convert_to_fp16(plugin_graph[0]), str(path))
    result = compare_with_torch(path, model, "fp16")
    assert result.passed, result.error


@pytest.mark.parametrize("opset", [17, max_opset() + 1])
def test_unsupported_opset(model, tmp_path, opset):
    with pytest.raises(ExportError, match=f"opset {opset} is not supported"):
        export_onnx(model, tmp_path / "model.onnx", opset=opset)
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.heavy
@pytest.mark.parametrize("backbone", ["ViT-B-32", "ViT-B-16"])
def test_vit_b_at_672(backbone, tmp_path):
    model = create_model(backbone, 672)
    path = export_onnx(model, tmp_path / "model.onnx")
    onnx.save(convert_to_fp16(onnx.load(str(path))), str(tmp_path / "model.fp16.onnx"))
    for precision, file in (("fp32", path), ("fp16", tmp_path / "model.fp16.onnx")):
        check_graph(file)
        result = compare_with_torch(file, model, precision, shapes=tuple(SHAPES))
        assert result.passed, (precision, result.error)
