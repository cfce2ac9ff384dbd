"""The ``--plugin`` node: ``defr::PairMaskedAttention``, one ONNX file for ONNX Runtime and TensorRT.

A ``--plugin`` graph carries the last block's masked CLS attention as ONE node of domain ``defr``,
op ``PairMaskedAttention`` (inputs q_cls [B, D], k, v [B, L, D], boxes_h, boxes_o [P, 4] float32,
pair_index [P] int64; output [P, D]; attributes ``heads``, ``grid_size``, ``image_size``,
``mask_mode``, ``plugin_namespace = "defr"``, ``plugin_version = "1"``, ``aot = 1``), AND a
model-local ONNX function of the same domain and name whose body is that math in standard ops:

- ONNX Runtime has no kernel for the op, so it runs the function: ``--plugin`` graphs are checked
  against PyTorch like the plain ones.
- TensorRT's parser looks the op up in its plugin registry first, where
  ``defr.kernels.tensorrt_plugin.register_plugin`` put the Triton kernel.

The function body is generated, not written twice: ``pair_attention_standard_ops`` (the math of
the plain graphs) exported on its own, with the model's geometry and mask mode as constants,
wrapped in a Cast of q, k, v to float32 and a CastLike back to q's type so one body serves float32
and float16 graphs and always accumulates in float32.
"""

from __future__ import annotations

import warnings

import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from defr.kernels.spec import PairOp, cls_attention_bias, pair_masks
from defr.model.pair_attention import pair_attention_standard_ops

PLUGIN_DOMAIN = "defr"
PLUGIN_OP = "PairMaskedAttention"
PLUGIN_VERSION = "1"
PLUGIN_INPUTS = ("q_cls", "k", "v", "boxes_h", "boxes_o", "pair_index")
PLUGIN_FLOAT32_INPUTS = (3, 4)  # boxes_h, boxes_o: pixel coordinates stay float32 in a float16 graph
PLUGIN_ATTRIBUTES = ("heads", "grid_size", "image_size", "mask_mode", "plugin_namespace", "plugin_version", "aot")


def node_attributes(op: PairOp) -> dict:
    """The attributes of a ``PairMaskedAttention`` node (``PLUGIN_ATTRIBUTES``) for ``op``."""
    return {
        "heads": op.heads,
        "grid_size": op.grid_size,
        "image_size": op.image_size,
        "mask_mode": op.mask_mode,
        "plugin_namespace": PLUGIN_DOMAIN,
        "plugin_version": PLUGIN_VERSION,
        "aot": 1,  # TensorRT: use the plugin's ahead-of-time implementation (no Python at inference)
    }


def plugin_node_attributes(model: onnx.ModelProto) -> list[dict]:
    """The attributes of every ``PairMaskedAttention`` node in ``model``'s main graph (none: a plain graph)."""
    return [
        {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        for node in model.graph.node
        if node.op_type == PLUGIN_OP and node.domain == PLUGIN_DOMAIN
    ]


def schema() -> onnx.defs.OpSchema:
    """The node's ONNX schema: the exporter needs one to emit the node, and ``onnx.checker`` checks
    the node's inputs and attributes against it (the function body is checked on its own)."""
    S = onnx.defs.OpSchema
    ints, string = S.AttrType.INT, S.AttrType.STRING
    return S(
        PLUGIN_OP,
        PLUGIN_DOMAIN,
        1,
        doc="Masked CLS attention of human-object pairs in the last ViT block (DEFR mask-1); see docs/export.md.",
        inputs=[S.FormalParameter(n, "T") for n in ("q_cls", "k", "v")]
        + [S.FormalParameter(n, "tensor(float)") for n in ("boxes_h", "boxes_o")]  # float32 in any precision
        + [S.FormalParameter("pair_index", "tensor(int64)")],
        outputs=[S.FormalParameter("out", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "float tensors")],
        attributes=[
            S.Attribute("heads", ints, "attention heads; D is split into heads of D / heads"),
            S.Attribute("grid_size", ints, "G: patches per side of the S×S input"),
            S.Attribute("image_size", ints, "S: input side in pixels; boxes are scaled by G / S"),
            S.Attribute("mask_mode", string, "hard: -inf outside the boxes; released: +1 outside"),
            S.Attribute("plugin_namespace", string, "TensorRT plugin namespace (parsers before 10.10)"),
            S.Attribute("plugin_version", string, "TensorRT plugin version"),
            S.Attribute("aot", ints, "1: TensorRT uses the plugin's ahead-of-time implementation"),
        ],
    )


def register_schema() -> None:
    """Make ``onnx`` (checker, shape inference, the exporter) know the node; idempotent."""
    if not onnx.defs.has(PLUGIN_OP, PLUGIN_DOMAIN):
        onnx.defs.register_schema(schema())


def translation_table() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export``: ``torch.ops.defr.pair_masked_attention`` →
    one ``defr::PairMaskedAttention`` node."""
    import onnxscript

    register_schema()
    defr_ops = onnxscript.values.Opset(PLUGIN_DOMAIN, 1)

    def to_onnx(q_cls, k, v, boxes_h, boxes_o, pair_index, heads: int, grid_size: int, image_size: int, mask_mode):
        attrs = node_attributes(PairOp(heads, grid_size, image_size, mask_mode))
        return defr_ops.PairMaskedAttention(q_cls, k, v, boxes_h, boxes_o, pair_index, **attrs)

    return {torch.ops.defr.pair_masked_attention.default: to_onnx}


class _Body(nn.Module):
    """The node's math for one model: geometry and mask mode fixed, inputs float32."""

    def __init__(self, op: PairOp):
        super().__init__()
        self.op = op

    def forward(self, q_cls, k, v, boxes_h, boxes_o, pair_index):
        op = self.op
        bias = cls_attention_bias(pair_masks(boxes_h, boxes_o, op.image_size, op.patch_size), op.mask_mode)
        return pair_attention_standard_ops(q_cls, k, v, bias, pair_index, op.heads)


def plugin_function(op: PairOp, dim: int, opset: int):
    """The model-local ``defr::PairMaskedAttention`` function of ``op`` for a model of width ``dim``."""
    seq = 1 + op.grid_size * op.grid_size
    example = (
        torch.randn(2, dim),
        torch.randn(2, seq, dim),
        torch.randn(2, seq, dim),
        torch.tensor([[0.0, 0.0, 8.0, 8.0]] * 3),
        torch.tensor([[4.0, 4.0, 16.0, 16.0]] * 3),
        torch.tensor([0, 1, 1]),
    )
    batch, pairs = torch.export.Dim("B", min=1), torch.export.Dim("P", min=1)
    dynamic = {
        "q_cls": {0: batch},
        "k": {0: batch},
        "v": {0: batch},
        "boxes_h": {0: pairs},
        "boxes_o": {0: pairs},
        "pair_index": {0: pairs},
    }
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="# The axis name")
        program = torch.onnx.export(
            _Body(op).eval(),
            example,
            None,
            dynamo=True,
            input_names=list(PLUGIN_INPUTS),
            output_names=["out"],
            dynamic_shapes=dynamic,
            opset_version=opset,
            verbose=False,
        )
    return _as_function(program.model_proto)


def _as_function(proto: onnx.ModelProto) -> onnx.FunctionProto:
    """A single-output graph → the function: initializers become Constant nodes, q / k / v are cast
    to float32 on entry and the output back to q_cls's type."""
    graph = proto.graph
    if proto.functions:
        raise RuntimeError(f"the exported body has local functions of its own: {[f.name for f in proto.functions]}")
    entry = [
        helper.make_node("Cast", [f"{name}__in"], [name], to=TensorProto.FLOAT, name=f"{name}__to_float32")
        for name in PLUGIN_INPUTS[:3]
    ]
    constants = [
        helper.make_node("Constant", [], [t.name], value=numpy_helper.from_array(numpy_helper.to_array(t), t.name))
        for t in graph.initializer
    ]
    (output,) = graph.output
    exit_cast = helper.make_node("CastLike", [output.name, "q_cls__in"], ["out__typed"], name="out__like_q_cls")
    inputs = [f"{name}__in" if name in PLUGIN_INPUTS[:3] else name for name in PLUGIN_INPUTS]
    opsets = [helper.make_opsetid(o.domain, o.version) for o in proto.opset_import]
    return helper.make_function(
        PLUGIN_DOMAIN,
        PLUGIN_OP,
        inputs,
        ["out__typed"],
        [*entry, *constants, *graph.node, exit_cast],
        opsets,
        attributes=list(PLUGIN_ATTRIBUTES),
        doc_string="Masked CLS attention of human-object pairs (DEFR mask-1) in standard ops; see docs/export.md.",
    )
