"""Masked CLS attention for human–object pairs in the last transformer block (DEFR "mask-1").

With the mask only in the last block, the first L−1 blocks do not depend on the pair, and in
the last block only the CLS row is read out. So per pair we need one masked softmax over the
CLS scores, a weighted sum of V, the out-projection and the MLP: O(L·D + D²) work, never a
[P, L, L] tensor.

Mask modes (``MASK_MODES``), the bias added to the CLS row's attention scores:
- ``hard`` (the paper, default): 0 for the CLS token and the patches inside either box, −inf
  for the others: the pair's CLS sees only its boxes.
- ``released`` (the released code's arithmetic): its boolean mask (True outside the boxes) is
  cast to the activation dtype and ADDED by ``nn.MultiheadAttention``: +1 for patches outside
  both boxes, 0 inside and for CLS; nothing is masked.
"""

from __future__ import annotations

import torch
from torch import nn

from defr.errors import ConfigError

MASK_MODES = ("hard", "released")


def check_mask_mode(mask_mode: str) -> str:
    if mask_mode not in MASK_MODES:
        raise ConfigError(f"mask_mode must be one of {MASK_MODES}, not {mask_mode!r}")
    return mask_mode


def box_patch_ranges(boxes: torch.Tensor, image_size: int, patch_size: int) -> torch.Tensor:
    """boxes: [P, 4] float (x1, y1, x2, y2), pixels of the S×S input → [P, 4] long (c0, r0, c1, r1).

    ``c0 = floor(x1·G/S)``, ``c1 = ceil(x2·G/S)`` (rows alike), clamped to [0, G]; the box covers
    patches ``r0 ≤ r < r1`` and ``c0 ≤ c < c1``.
    """
    grid = image_size // patch_size
    scaled = boxes * (grid / image_size)
    lo = torch.floor(scaled[:, :2])
    hi = torch.ceil(scaled[:, 2:])
    return torch.cat([lo, hi], dim=1).clamp(0, grid).long()


def box_masks(boxes: torch.Tensor, image_size: int, patch_size: int) -> torch.Tensor:
    """boxes: [P, 4] pixels of the S×S input → [P, G*G] bool, patches (row-major) inside each box."""
    grid = image_size // patch_size
    c0, r0, c1, r1 = box_patch_ranges(boxes, image_size, patch_size).unbind(1)
    idx = torch.arange(grid, device=boxes.device)
    rows = (idx >= r0[:, None]) & (idx < r1[:, None])  # [P, G]
    cols = (idx >= c0[:, None]) & (idx < c1[:, None])  # [P, G]
    return (rows[:, :, None] & cols[:, None, :]).flatten(1)


def pair_masks(boxes_h: torch.Tensor, boxes_o: torch.Tensor, image_size: int, patch_size: int) -> torch.Tensor:
    """boxes_h, boxes_o: [P, 4] pixels of the S×S input → [P, G*G] bool, patches the pair's CLS may see."""
    return box_masks(boxes_h, image_size, patch_size) | box_masks(boxes_o, image_size, patch_size)


def cls_attention_bias(visible: torch.Tensor, mask_mode: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """visible: [P, N] bool patches inside the pair's boxes → [P, 1 + N] additive bias of the CLS
    row's scores (column 0: the CLS key, always 0), for ``mask_mode`` (module docstring)."""
    check_mask_mode(mask_mode)
    outside = -float("inf") if mask_mode == "hard" else 1.0
    bias = torch.where(visible, 0.0, outside).to(dtype)
    return torch.cat([bias.new_zeros(bias.shape[0], 1), bias], dim=1)


def pair_cls_features(
    block: nn.Module, tokens: torch.Tensor, bias: torch.Tensor, pair_index: torch.Tensor
) -> torch.Tensor:
    """Output CLS token of the last block for each pair.

    block: a ``ResidualAttentionBlock``; tokens: [B, L, D], the input of that block (L = 1 + N,
    CLS first); bias: [P, L] float added to each pair's CLS scores (``cls_attention_bias``);
    pair_index: [P] long, the image of each pair. Returns [P, D].
    """
    attn = block.attn
    q, k, v = attn.qkv(block.ln_1(tokens))  # [B, H, L, dh]
    scale = q.shape[-1] ** -0.5
    scores = (q[:, :, :1] @ k.transpose(-1, -2)).squeeze(2) * scale  # [B, H, L]; pair-independent
    pair_scores = scores[pair_index] + bias[:, None, :].to(scores.dtype)  # [P, H, L]
    weights = pair_scores.softmax(dim=-1)
    # Weighted sum against every image's V, then keep each pair's own image: one batched matmul
    # with standard ops (exports to ONNX with dynamic B and P); the extra work is B·P·L·D, small
    # next to the backbone for the frame batches a runtime sees.
    per_image = torch.einsum("phl,bhld->pbhd", weights, v)  # [P, B, H, dh]
    mixed = per_image[torch.arange(pair_index.shape[0], device=pair_index.device), pair_index]  # [P, H, dh]
    x = tokens[pair_index, 0] + attn.out_proj(mixed.flatten(1))
    return x + block.mlp(block.ln_2(x))
