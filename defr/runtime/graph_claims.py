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

The graph is parsed without its external data; the facts are kept per (path, SHA-256) for the process.
"""

from __future__ import annotations

import functools
import math
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

    proto = onnx.load(path, load_external_data=False)
    nodes = list(proto.graph.node)
    constants = {t.name: t for t in proto.graph.initializer}
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


def _is_scalar(tensor) -> bool:
    return math.prod(tensor.dims) == 1 and not tensor.external_data


# file kind → the check of its sidecar's claims (kinds without one, e.g. TensorRT engines, are opaque)
CLAIM_CHECKS = {".onnx": check_onnx_claims}
