"""The ONNX graph of DEFR's pair runtime: images + pairs → pair logits and image logits.

Inputs: ``images`` float32 [B, 3, S, S] (resized and normalised), ``boxes_h``, ``boxes_o`` float32
[P, 4] (pixels of the S×S input), ``pair_index`` int64 [P]. Outputs: ``pair_logits`` float32 [P, C],
``image_logits`` float32 [B, C]. B and P are dynamic (P >= 1).

Exporter: ``torch.onnx.export(..., dynamo=True)`` with ``dynamic_shapes``: it traces the whole
``PairGraph`` (``forward_pairs``, mask-1: the backbone once per image) with symbolic B and P, so one file serves
every shape. It emits opset >= 18 only, and quietly keeps 18 when asked for an opset it cannot
target, so the requested opset is checked on the result.

With ``plugin=True`` the last block's masked CLS attention becomes one node of domain ``defr``,
``PairMaskedAttention``, with a model-local function of the same name that ONNX Runtime runs and
TensorRT replaces by its plugin (``defr.export.plugin_node``; spec: ``docs/export.md``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from defr.choices import DEFAULT_MASK_MODE, check_mask_mode
from defr.export.defaults import DEFAULT_OPSET
from defr.export.errors import ExportError
from defr.export.plugin_node import PLUGIN_DOMAIN, plugin_function, translation_table
from defr.model import DEFR, VisionTransformer
from defr.model.pair_attention import (
    PairOp,
    cls_attention_bias,
    pair_cls_features,
    pair_cls_features_standard_ops,
    pair_masks,
)
from defr.optional import import_onnxscript
from defr.runtime.contract import INPUT_NAMES, OUTPUT_NAMES, example_inputs

MIN_OPSET = 18  # the dynamo exporter's op library starts at 18


def max_opset() -> int:
    """The newest default-domain opset the installed ``onnx`` knows."""
    return onnx.defs.onnx_opset_version()


def check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= max_opset():
        raise ExportError(
            f"opset {opset} is not supported: the exporter targets opsets {MIN_OPSET}..{max_opset()} "
            f"(default {DEFAULT_OPSET})"
        )


# --- the exported module ---------------------------------------------------------------------------------------


class PairGraph(nn.Module):
    """``DEFR.forward_pairs`` with image logits and a fixed mask mode, as a module of the four graph inputs.

    The pair attention is ``pair_attention_standard_ops`` (plain ONNX ops), or with ``plugin`` the
    ``defr::pair_masked_attention`` op, exported as one ``PairMaskedAttention`` node
    (``defr.export.plugin_node``). Image logits are pairs whose boxes cover the whole input: every
    patch visible, a zero bias in either mode, as in ``forward_pairs``.
    """

    def __init__(self, model: DEFR, mask_mode: str = DEFAULT_MASK_MODE, plugin: bool = False):
        super().__init__()
        self.model = model
        self.mask_mode = check_mask_mode(mask_mode)
        self.plugin = plugin

    def forward(self, images, boxes_h, boxes_o, pair_index) -> tuple[torch.Tensor, torch.Tensor]:
        vit = self.model.vit
        s, patch, block = vit.cfg.image_size, vit.cfg.patch_size, vit.blocks[-1]
        tokens = vit.tokens(images, num_blocks=len(vit.blocks) - 1)  # [B, L, D]
        b, p = images.shape[0], pair_index.shape[0]
        whole = images.new_tensor([0.0, 0.0, s, s]).expand(b, 4)
        boxes_h, boxes_o = torch.cat([boxes_h, whole]), torch.cat([boxes_o, whole])
        index = torch.cat([pair_index, torch.arange(b, device=pair_index.device)])
        if self.plugin:
            features = pair_cls_features(
                block, tokens, boxes_h, boxes_o, index, image_size=s, patch_size=patch, mask_mode=self.mask_mode
            )
        else:
            bias = cls_attention_bias(pair_masks(boxes_h, boxes_o, s, patch), self.mask_mode)
            features = pair_cls_features_standard_ops(block, tokens, bias, index)
        logits = self.model.classify(vit.ln_post(features))
        return logits[:p], logits[p:]


def export_onnx(
    model: DEFR,
    path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    plugin: bool = False,
    mask_mode: str = DEFAULT_MASK_MODE,
) -> Path:
    """Write ``model``'s pair graph to ``path`` (B and P dynamic, ``mask_mode`` baked in); returns the path.

    Raises ``ExportError`` for a model without a ViT backbone or an opset the exporter cannot target.
    """
    check_opset(opset)
    import_onnxscript()
    if not isinstance(model.backbone, VisionTransformer):
        raise ExportError(f"backbone {model.cfg.backbone.name!r} is not a ViT: the pair graph needs a ViT backbone")
    graph = PairGraph(model, mask_mode, plugin).eval()
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
            custom_translation_table=translation_table() if plugin else None,
            verbose=False,
        )
    proto = program.model_proto
    got = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if got != opset:
        raise ExportError(f"opset {opset} is not supported by the installed exporter (it produced opset {got})")
    _name_dynamic_axes(proto)
    if plugin:
        vit = model.vit.cfg
        function = plugin_function(PairOp(vit.heads, vit.grid_size, vit.image_size, mask_mode), vit.width, opset)
        proto.functions.append(function)
        if not any(o.domain == PLUGIN_DOMAIN for o in proto.opset_import):
            proto.opset_import.append(onnx.helper.make_opsetid(PLUGIN_DOMAIN, 1))
    path = Path(path)
    onnx.save(proto, str(path))
    return path


def _name_dynamic_axes(proto: onnx.ModelProto) -> None:
    """Call the dynamic leading axes ``B`` (images, image_logits) and ``P`` (everything else)."""
    for value in [*proto.graph.input, *proto.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.dim_param = "B" if value.name in ("images", "image_logits") else "P"
