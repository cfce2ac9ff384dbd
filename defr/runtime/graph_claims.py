"""What an exported graph itself says about its precision and mask mode, checked against what its
sidecar claims when the model is opened (``defr.runtime.registry.load_backend``).

A sidecar is covered by its own digest (``sidecar_sha256``) and each file by its SHA-256, but a
consistent sidecar can still describe the wrong graph (an fp32 hard-mask ``model.onnx`` listed as
int8, or as ``released``): a runtime would then run one model and report another. The observable
facts, as ``defr.export`` writes them:

- **precision**: an int8 file has QuantizeLinear / DequantizeLinear nodes (or integer ops); an fp16
  file has float16 initializers; an fp32 file has neither.
- **mask mode**: a ``--plugin`` graph's ``PairMaskedAttention`` node carries a ``mask_mode``
  attribute; otherwise the pair bias is ``Where(visible, 0, outside)`` with a constant scalar
  ``outside``: −inf for ``hard``, +1 for ``released`` (``defr.kernels.spec.cls_attention_bias``). A
  graph showing neither claims nothing and is not refused.

The graph's outline is read without its weights (``_graph_outline``); the facts are kept per (path,
SHA-256) for the process.
"""

from __future__ import annotations

import functools
import math
import mmap
import os
from dataclasses import dataclass

from defr.choices import MaskMode, Precision
from defr.runtime.sidecar import SIDECAR_NAME, SidecarError

INT8_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "QLinearMatMul", "QLinearConv", "MatMulInteger", "ConvInteger"}
)
MASK_OUTSIDE = {-math.inf: "hard", 1.0: "released"}  # the constant outside the pair's boxes → the mode
PLUGIN_OP = "PairMaskedAttention"


@dataclass(frozen=True)
class GraphFacts:
    """What a graph shows: its precision, and the mask modes of its pair bias (empty: none seen)."""

    precision: Precision
    mask_modes: frozenset[str]


def check_onnx_claims(path: str | os.PathLike, sha256: str, precision: Precision, mask_mode: MaskMode) -> None:
    """SidecarError (one line) when the ONNX graph at ``path`` is not of the ``precision`` and
    ``mask_mode`` its sidecar claims."""
    facts = onnx_facts(str(path), sha256)
    if facts.precision != precision:
        raise SidecarError(
            f"{path}: {SIDECAR_NAME} says {precision} but the graph is {facts.precision}: "
            "the sidecar does not describe this file; export again"
        )
    if facts.mask_modes and facts.mask_modes != {mask_mode}:
        raise SidecarError(
            f"{path}: {SIDECAR_NAME} says mask_mode {mask_mode!r} but the graph has {sorted(facts.mask_modes)}: "
            "the sidecar does not describe this file; export again"
        )


@functools.lru_cache(maxsize=16)
def onnx_facts(path: str, sha256: str) -> GraphFacts:
    """The ``GraphFacts`` of the ONNX file ``path`` (whose SHA-256, already checked, is ``sha256``: the cache key)."""
    import onnx
    from onnx import numpy_helper

    nodes, constants = _graph_outline(path)
    for node in nodes:
        tensors = [a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
        if node.op_type == "Constant" and tensors:
            constants[node.output[0]] = tensors[0]
    if any(n.op_type in INT8_OPS for n in nodes):
        precision = "int8"
    elif any(t.data_type == onnx.TensorProto.FLOAT16 for t in constants.values()):
        precision = "fp16"
    else:
        precision = "fp32"
    modes = set()
    for node in nodes:
        if node.op_type == PLUGIN_OP:
            modes.update(a.s.decode() for a in node.attribute if a.name == "mask_mode")
        elif node.op_type == "Where" and len(node.input) == 3 and node.input[2] in constants:
            outside = constants[node.input[2]]
            values = numpy_helper.to_array(outside).ravel() if _is_scalar(outside) else ()
            modes.update(MASK_OUTSIDE[float(v)] for v in values if float(v) in MASK_OUTSIDE)
    return GraphFacts(precision, frozenset(modes))


# --- reading a graph's outline without its weights ------------------------------------------------------------
# ``onnx.load`` parses every weight (about 7 s per GB here); the facts need the nodes and each tensor's
# name, type and shape, and the values of small ones. The protobuf wire format is walked over a memory
# map instead: small messages are parsed by ``onnx``, large tensors only up to their header fields.

SMALL = 1 << 16  # bytes: messages up to this size are parsed whole
MODEL_GRAPH, GRAPH_NODE, GRAPH_INITIALIZER = 7, 1, 5  # field numbers of ModelProto.graph, GraphProto.node / initializer
TENSOR_DIMS, TENSOR_TYPE, TENSOR_NAME = 1, 2, 8
NODE_INPUT, NODE_OUTPUT, NODE_NAME, NODE_OP, NODE_ATTRIBUTE, NODE_DOMAIN = 1, 2, 3, 4, 5, 7
ATTRIBUTE_NAME, ATTRIBUTE_TENSOR, ATTRIBUTE_TYPE = 1, 5, 20


def _graph_outline(path: str) -> tuple[list, dict]:
    """(the graph's nodes, its initializers by name) of the ONNX file ``path``, large tensors without data."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        graphs = [v for number, wire, v in _fields(buf, 0, len(buf)) if number == MODEL_GRAPH and wire == 2]
        nodes, initializers = [], {}
        for start, end in graphs[-1:]:
            for number, _, (s, e) in (f for f in _fields(buf, start, end) if f[1] == 2):
                if number == GRAPH_NODE:
                    nodes.append(_node(buf, s, e))
                elif number == GRAPH_INITIALIZER:
                    tensor = _tensor(buf, s, e)
                    initializers[tensor.name] = tensor
        return nodes, initializers


def _fields(buf, start: int, end: int):
    """(field number, wire type, value) of a protobuf message in ``buf[start:end]``: a varint's value, else
    the (start, end) of the field's bytes."""
    i = start
    while i < end:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            yield number, wire, value
            continue
        if wire == 2:
            size, i = _varint(buf, i)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
        else:
            raise SidecarError(f"not an ONNX model (protobuf wire type {wire})")
        yield number, wire, (i, i + size)
        i += size


def _varint(buf, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7


def _tensor(buf, start: int, end: int):
    """A ``TensorProto``: whole when small, else its name, type and shape only."""
    import onnx

    if end - start <= SMALL:
        return onnx.TensorProto.FromString(buf[start:end])
    tensor = onnx.TensorProto()
    for number, wire, value in _fields(buf, start, end):
        if number == TENSOR_TYPE and wire == 0:
            tensor.data_type = value
        elif number == TENSOR_NAME and wire == 2:
            tensor.name = buf[value[0] : value[1]].decode()
        elif number == TENSOR_DIMS and wire == 0:
            tensor.dims.append(value)
        elif number == TENSOR_DIMS and wire == 2:  # packed
            i = value[0]
            while i < value[1]:
                dim, i = _varint(buf, i)
                tensor.dims.append(dim)
    if math.prod(tensor.dims) == 1:  # a scalar's value is small: keep it
        return onnx.TensorProto.FromString(buf[start:end])
    return tensor


def _node(buf, start: int, end: int):
    """A ``NodeProto``: whole when small, else (a Constant holding a weight) with its tensors' headers."""
    import onnx

    if end - start <= SMALL:
        return onnx.NodeProto.FromString(buf[start:end])
    node = onnx.NodeProto()
    text = {NODE_INPUT: node.input, NODE_OUTPUT: node.output}
    for number, wire, value in _fields(buf, start, end):
        if wire != 2:
            continue
        s, e = value
        if number in text:
            text[number].append(buf[s:e].decode())
        elif number in (NODE_NAME, NODE_OP, NODE_DOMAIN):
            setattr(node, {NODE_NAME: "name", NODE_OP: "op_type", NODE_DOMAIN: "domain"}[number], buf[s:e].decode())
        elif number == NODE_ATTRIBUTE:
            node.attribute.append(_attribute(buf, s, e))
    return node


def _attribute(buf, start: int, end: int):
    import onnx

    if end - start <= SMALL:
        return onnx.AttributeProto.FromString(buf[start:end])
    attribute = onnx.AttributeProto()
    for number, wire, value in _fields(buf, start, end):
        if number == ATTRIBUTE_NAME and wire == 2:
            attribute.name = buf[value[0] : value[1]].decode()
        elif number == ATTRIBUTE_TYPE and wire == 0:
            attribute.type = value
        elif number == ATTRIBUTE_TENSOR and wire == 2:
            attribute.t.CopyFrom(_tensor(buf, *value))
    return attribute


def _is_scalar(tensor) -> bool:
    return math.prod(tensor.dims) == 1 and not tensor.external_data


# file kind → the check of its sidecar's claims (kinds without one, e.g. TensorRT engines, are opaque)
CLAIM_CHECKS = {".onnx": check_onnx_claims}
