"""The ONNX graph of DEFR's pair runtime: images + pairs → pair logits and image logits.

Inputs: ``images`` float32 [B, 3, S, S] (resized and normalised), ``boxes_h``, ``boxes_o`` float32
[P, 4] (pixels of the S×S input), ``pair_index`` int64 [P]. Outputs: ``pair_logits`` float32 [P, C],
``image_logits`` float32 [B, C]. B and P are dynamic (P >= 1).

Exporter: ``torch.onnx.export(..., dynamo=True)`` with ``dynamic_shapes``: it traces the whole
``forward_pairs`` (mask-1, the backbone once per image) with symbolic B and P, so one file serves
every shape. It emits opset >= 18 only, and quietly keeps 18 when asked for an opset it cannot
target, so the requested opset is checked on the result.

With ``plugin=True`` the last block's masked CLS attention becomes one node of domain ``defr``,
``PairMaskedAttention`` (spec: ``docs/export.md``), for a TensorRT plugin; ONNX Runtime cannot run
that graph.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from defr.errors import DefrError
from defr.model import DEFR, VisionTransformer, pair_masks
from defr.model.pair_attention import check_mask_mode, cls_attention_bias
from defr.runtime.contract import INPUT_NAMES, OUTPUT_NAMES, example_inputs

MIN_OPSET = 18  # the dynamo exporter's op library starts at 18
DEFAULT_OPSET = 18  # parsed by TensorRT 10 and run by ONNX Runtime >= 1.14
PLUGIN_DOMAIN = "defr"
PLUGIN_OP = "PairMaskedAttention"
PLUGIN_FLOAT32_INPUTS = (3, 4)  # boxes_h, boxes_o: pixel coordinates stay float32 in a float16 graph


class ExportError(DefrError, ValueError):
    """An export that cannot be done as asked; the message says what to change."""


def max_opset() -> int:
    """The newest default-domain opset the installed ``onnx`` knows."""
    return onnx.defs.onnx_opset_version()


def check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= max_opset():
        raise ExportError(
            f"opset {opset} is not supported: the exporter targets opsets {MIN_OPSET}..{max_opset()} "
            f"(default {DEFAULT_OPSET})"
        )


# --- the plugin node -------------------------------------------------------------------------------------------


@torch.library.custom_op("defr_onnx::pair_masked_attention", mutates_args=())
def pair_masked_attention(
    q_cls: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    boxes_h: torch.Tensor,
    boxes_o: torch.Tensor,
    pair_index: torch.Tensor,
    grid_size: int,
    heads: int,
    image_size: int,
    mask_mode: str,
) -> torch.Tensor:
    """Reference of the ``defr::PairMaskedAttention`` node: each pair's CLS attention over its image.

    q_cls: [B, D] CLS query; k, v: [B, L, D] keys and values (L = 1 + G²); boxes_h, boxes_o: [P, 4]
    pixels of the S×S input; pair_index: [P] int64; mask_mode: ``hard`` or ``released``. Returns
    [P, D], heads concatenated, before the out-projection.
    """
    p, (_, n, d) = pair_index.shape[0], k.shape
    visible = pair_masks(boxes_h, boxes_o, image_size, image_size // grid_size)
    bias = cls_attention_bias(visible, mask_mode, q_cls.dtype)  # [P, L]
    q = q_cls[pair_index].view(p, heads, 1, d // heads)
    k = k[pair_index].view(p, n, heads, d // heads).transpose(1, 2)
    v = v[pair_index].view(p, n, heads, d // heads).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, None, None, :])
    return out.reshape(p, d)


@pair_masked_attention.register_fake
def _(q_cls, k, v, boxes_h, boxes_o, pair_index, grid_size, heads, image_size, mask_mode):
    return q_cls.new_empty(pair_index.shape[0], q_cls.shape[1])


def plugin_schema() -> onnx.defs.OpSchema:
    """The ONNX schema of the plugin node, so ``onnx.checker`` checks its inputs and attributes."""
    S = onnx.defs.OpSchema
    ints = S.AttrType.INT
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
            S.Attribute("grid_size", ints, "G: patches per side of the S×S input"),
            S.Attribute("heads", ints, "attention heads; D is split into heads of D / heads"),
            S.Attribute("image_size", ints, "S: input side in pixels; boxes are scaled by G / S"),
            S.Attribute("mask_mode", S.AttrType.STRING, "hard: -inf outside the boxes; released: +1 outside"),
        ],
    )


def register_plugin_schema() -> None:
    """Make ``onnx`` (checker, shape inference, the exporter) know the plugin node; idempotent."""
    if not onnx.defs.has(PLUGIN_OP, PLUGIN_DOMAIN):
        onnx.defs.register_schema(plugin_schema())


def _plugin_translation() -> dict:
    """``custom_translation_table`` for the exporter: our custom op → one ``defr`` node."""
    import onnxscript

    register_plugin_schema()
    defr_ops = onnxscript.values.Opset(PLUGIN_DOMAIN, 1)

    def to_onnx(q_cls, k, v, boxes_h, boxes_o, pair_index, grid_size: int, heads: int, image_size: int, mask_mode):
        return defr_ops.PairMaskedAttention(
            q_cls,
            k,
            v,
            boxes_h,
            boxes_o,
            pair_index,
            grid_size=grid_size,
            heads=heads,
            image_size=image_size,
            mask_mode=mask_mode,
        )

    return {torch.ops.defr_onnx.pair_masked_attention.default: to_onnx}


# --- the exported modules --------------------------------------------------------------------------------------


class PairGraph(nn.Module):
    """``DEFR.forward_pairs`` with image logits and a fixed mask mode, as a module of the four graph inputs."""

    def __init__(self, model: DEFR, mask_mode: str = "hard"):
        super().__init__()
        self.model = model
        self.mask_mode = check_mask_mode(mask_mode)

    def forward(self, images, boxes_h, boxes_o, pair_index) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_pairs(
            images, boxes_h, boxes_o, pair_index, with_image_logits=True, mask_mode=self.mask_mode
        )


class PluginPairGraph(PairGraph):
    """``PairGraph`` with the last block's masked CLS attention as the ``pair_masked_attention`` op.

    Image logits are pairs whose boxes cover the whole input: every patch visible, as in
    ``forward_pairs``.
    """

    def forward(self, images, boxes_h, boxes_o, pair_index) -> tuple[torch.Tensor, torch.Tensor]:
        vit = self.model.vit
        s, grid, block = vit.cfg.image_size, vit.cfg.grid_size, vit.blocks[-1]
        tokens = vit.tokens(images, num_blocks=len(vit.blocks) - 1)  # [B, L, D]
        b, p = images.shape[0], pair_index.shape[0]
        whole = images.new_tensor([0.0, 0.0, s, s]).expand(b, 4)
        index = torch.cat([pair_index, torch.arange(b, device=pair_index.device)])
        q, k, v = F.linear(block.ln_1(tokens), block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, dim=-1)
        mixed = torch.ops.defr_onnx.pair_masked_attention(
            q[:, 0].contiguous(),
            k.contiguous(),
            v.contiguous(),
            torch.cat([boxes_h, whole]),
            torch.cat([boxes_o, whole]),
            index,
            grid,
            block.attn.heads,
            s,
            self.mask_mode,
        )
        x = tokens[index, 0] + block.attn.out_proj(mixed)
        x = x + block.mlp(block.ln_2(x))
        logits = self.model.classify(vit.ln_post(x))
        return logits[:p], logits[p:]


def export_onnx(
    model: DEFR, path: str | os.PathLike, opset: int = DEFAULT_OPSET, plugin: bool = False, mask_mode: str = "hard"
) -> Path:
    """Write ``model``'s pair graph to ``path`` (B and P dynamic, ``mask_mode`` baked in); returns the path.

    Raises ``ExportError`` for a model without a ViT backbone or an opset the exporter cannot target.
    """
    check_opset(opset)
    if importlib.util.find_spec("onnxscript") is None:
        raise ExportError("the ONNX exporter (torch.onnx, dynamo) needs onnxscript: pip install onnxscript")
    if not isinstance(model.backbone, VisionTransformer):
        raise ExportError(f"backbone {model.cfg.backbone.name!r} is not a ViT: the pair graph needs a ViT backbone")
    graph = (PluginPairGraph if plugin else PairGraph)(model, mask_mode).eval()
    batch, pairs = torch.export.Dim("B", min=1), torch.export.Dim("P", min=1)
    dynamic = {"images": {0: batch}, "boxes_h": {0: pairs}, "boxes_o": {0: pairs}, "pair_index": {0: pairs}}
    with torch.no_grad(), warnings.catch_warnings():
        # The exporter warns that the inputs sharing P share one axis name: that is the intent.
        warnings.filterwarnings("ignore", message="# The axis name")
        program = torch.onnx.export(
            graph,
            example_inputs(model.cfg.image_size, batch=2, pairs=5),
            None,
            dynamo=True,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=dynamic,
            opset_version=opset,
            custom_translation_table=_plugin_translation() if plugin else None,
            verbose=False,
        )
    proto = program.model_proto
    got = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if got != opset:
        raise ExportError(f"opset {opset} is not supported by the installed exporter (it produced opset {got})")
    _name_dynamic_axes(proto)
    path = Path(path)
    onnx.save(proto, str(path))
    return path


def _name_dynamic_axes(proto: onnx.ModelProto) -> None:
    """Call the dynamic leading axes ``B`` (images, image_logits) and ``P`` (everything else)."""
    for value in [*proto.graph.input, *proto.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.dim_param = "B" if value.name in ("images", "image_logits") else "P"
