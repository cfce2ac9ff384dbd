"""An independent transcription of the released DEFR code's detection forward (github drjinying/hts),
for tests: ``hoi_detection/hoi_head.py`` (``HoiHead.build_attention_masks``, ``HoiHead.forward``) and
``hoi_detection/model.py`` (the first L − n blocks on the image, the last n on each pair), run on
open_clip's OpenAI-CLIP visual tower. open_clip's ``ResidualAttentionBlock.attention`` casts
``attn_mask`` to the activation dtype before ``nn.MultiheadAttention``, exactly as hts
``clip/layers.py`` does, so a boolean mask is ADDED as 0 / +1: the released arithmetic.

``hard=True`` turns the released mask into a real one (True → −inf), the paper's semantics.
Nothing here is shared with ``defr``'s pair path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.models.detection.transform import resize_boxes


def released_masks(boxes_h, boxes_o, image_size: int, grid: int, heads: int, hard: bool = False) -> torch.Tensor:
    """``HoiHead.build_attention_masks`` for one pair per row of boxes_h / boxes_o ([P, 4], pixels of
    the S×S input) → [P·heads, L, L]: bool (True outside the boxes, CLS row only), or float with
    −inf where True when ``hard``."""
    length = grid * grid + 1
    n = boxes_h.shape[0]
    masks = torch.zeros([n * heads, length, length], dtype=torch.bool)
    for i in range(n):
        mask = masks[i * heads : (i + 1) * heads, :, :]
        cls_img_attn_mask = mask[:, 0, 1:].view([heads, grid, grid])
        cls_img_attn_mask.fill_(1)
        boxes = resize_boxes(torch.vstack([boxes_h[i], boxes_o[i]]), (image_size, image_size), (grid, grid))
        for box in boxes:
            xmin, ymin, xmax, ymax = box.unbind(0)
            xmin = max(0, xmin.floor().int())
            ymin = max(0, ymin.floor().int())
            xmax = min(grid, xmax.ceil().int())
            ymax = min(grid, ymax.ceil().int())
            cls_img_attn_mask[:, ymin:ymax, xmin:xmax] = 0
    if hard:
        return torch.zeros(masks.shape).masked_fill(masks, float("-inf"))
    return masks


def released_pair_logits(
    visual,
    classifier: torch.Tensor,
    logit_scale: float,
    images: torch.Tensor,
    boxes_h: torch.Tensor,
    boxes_o: torch.Tensor,
    pair_index: torch.Tensor,
    mask_layers: int = 1,
    hard: bool = False,
) -> torch.Tensor:
    """[P, C] pair logits as the released model computes them.

    visual: an open_clip ``VisionTransformer`` (OpenAI CLIP layout); classifier: [C, D]; logit_scale:
    its log; images: [B, 3, S, S] normalised; boxes: [P, 4] pixels of the S×S input.
    """
    s = images.shape[-1]
    grid = s // visual.conv1.kernel_size[0]
    blocks = visual.transformer.resblocks
    x = _tokens(visual, images)
    for block in blocks[: len(blocks) - mask_layers]:
        x = block(x)
    x = x[pair_index]
    masks = released_masks(boxes_h, boxes_o, s, grid, blocks[0].attn.num_heads, hard)
    for block in blocks[len(blocks) - mask_layers :]:
        x = block(x, attn_mask=masks)
    features = visual.ln_post(x[:, 0])
    features = features / features.norm(dim=-1, keepdim=True)
    text_features = classifier / classifier.norm(dim=-1, keepdim=True)
    return math.exp(logit_scale) * features @ text_features.t()


def released_image_logits(visual, classifier: torch.Tensor, logit_scale: float, images: torch.Tensor) -> torch.Tensor:
    """[B, C]: ``ClipViT.forward`` (``clip/clip_hico.py``), γ · normalize(ln_post(CLS)) @ normalize(W)ᵀ, no mask."""
    features = visual.ln_post(visual.transformer(_tokens(visual, images))[:, 0])
    return math.exp(logit_scale) * F.normalize(features, dim=-1) @ F.normalize(classifier, dim=-1).t()


def _tokens(visual, images: torch.Tensor) -> torch.Tensor:
    """[B, L, D] after the patch embedding, CLS, positional embedding and ln_pre (open_clip's order)."""
    x = visual.conv1(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    return visual.ln_pre(torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype))
