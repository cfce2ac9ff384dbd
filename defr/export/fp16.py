"""The float16 variant of an exported graph, for GPU runtimes.

Graph inputs and outputs stay float32 (a Cast at each boundary), so a runtime feeds both files
the same arrays. Inside, the image path computes in float16: every node that reads a float tensor
derived from ``images`` runs in float16, the float weights it reads are stored in float16, and a
Cast to float32 inside that region becomes a Cast to float16.

The box → patch-mask arithmetic stays float32 on purpose: it depends on the boxes alone, and in
float16 a box edge near 672 px moves by up to 0.25 px, enough to flip ``floor(x·G/S)`` and change
which patches a pair sees. LayerNormalization keeps float32 statistics (its default
``stash_type``); the -inf of the attention mask is exact in float16, and no softmax row is fully
masked because the CLS token always sees itself.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from defr.export.errors import ExportError
from defr.export.plugin_node import PLUGIN_DOMAIN, PLUGIN_FLOAT32_INPUTS, PLUGIN_OP

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
HALF_INPUTS = ("images",)
FLOAT32_INPUTS = {(PLUGIN_DOMAIN, PLUGIN_OP): PLUGIN_FLOAT32_INPUTS}  # node inputs that stay float32
SUFFIX = "__fp16"


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float16 copy of ``model`` (see the module docstring); ``model`` is not modified."""
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    _check_flat(model)
    types = _elem_types(graph)
    initializers = {t.name: t for t in graph.initializer}
    half: set[str] = set()  # values that were float32 and are now float16
    copies: dict[str, str] = {}  # float32 value → its float16 copy
    nodes: list[onnx.NodeProto] = []

    def half_copy(name: str) -> str:
        if name not in copies:
            copies[name] = name + SUFFIX
            if name in initializers:
                array = numpy_helper.to_array(initializers[name]).astype(np.float16)
                graph.initializer.append(numpy_helper.from_array(array, copies[name]))
            else:
                nodes.append(helper.make_node("Cast", [name], [copies[name]], to=HALF, name=copies[name]))
        return copies[name]

    for node in graph.node:
        in_region = any(i in half or i in HALF_INPUTS for i in node.input)
        if in_region:
            keep = FLOAT32_INPUTS.get((node.domain, node.op_type), ())
            for k, name in enumerate(node.input):
                if name not in half and types.get(name) == FLOAT and k not in keep:
                    node.input[k] = half_copy(name)
            half.update(o for o in node.output if types.get(o) == FLOAT)
            if node.op_type == "Cast":
                _cast_to_half(node)
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    _cast_outputs_back(graph, half)
    _drop_unused_initializers(graph)
    del graph.value_info[:]  # float32 types recorded before the conversion; re-inferred by the checker
    return model


def _check_flat(model: onnx.ModelProto) -> None:
    """The conversion walks one flat graph: no If/Loop bodies, and no local functions but the plugin
    node's, whose body casts its float inputs to float32 itself (``defr.export.plugin_node``)."""
    other = [f.name for f in model.functions if (f.domain, f.name) != (PLUGIN_DOMAIN, PLUGIN_OP)]
    if other:
        raise ExportError(f"fp16: graphs with local functions are not supported ({other[0]})")
    for node in model.graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ExportError(f"fp16: graphs with subgraphs are not supported ({node.op_type} node {node.name!r})")


def _elem_types(graph: onnx.GraphProto) -> dict[str, int]:
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]}
    types.update({t.name: t.data_type for t in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                types[node.output[0]] = value.data_type
    return types


def _cast_to_half(node: onnx.NodeProto) -> None:
    for attr in node.attribute:
        if attr.name == "to" and attr.i == FLOAT:
            attr.i = HALF


def _cast_outputs_back(graph: onnx.GraphProto, half: set[str]) -> None:
    """Graph outputs computed in float16 get a final Cast to float32 under their own name."""
    for output in graph.output:
        if output.name not in half:
            continue
        inner = output.name + SUFFIX
        for node in graph.node:
            for seq in (node.input, node.output):
                for k, name in enumerate(seq):
                    if name == output.name:
                        seq[k] = inner
        graph.node.append(helper.make_node("Cast", [inner], [output.name], to=FLOAT, name=output.name + "_to_fp32"))


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
