"""The last transformer block for human–object pairs (DEFR "mask-1").

With the mask only in the last block, the first L−1 blocks do not depend on the pair, and in
the last block only the CLS row is read out. So per pair we need one masked softmax over the
CLS scores, a weighted sum of V, the out-projection and the MLP: O(L·D + D²) work, never a
[P, L, L] tensor.

The box → patch rule and the mask modes are the pair-attention op's contract and live with it in
``defr.kernels.spec`` (re-exported here; the names and the default are ``defr.choices``): ``hard``
(the paper, default) adds −inf to the CLS scores of patches outside both boxes; ``released`` (the
released code's arithmetic: its boolean mask added as a float) adds +1 there and masks nothing.

Two implementations of the pair step, both checked against ``DEFR.forward_pairs_dense``:
``pair_cls_features`` calls the ``defr::pair_masked_attention`` op (Triton on CUDA, the grouped
O(P·L·D) PyTorch path elsewhere; ``attention`` picks); ``pair_cls_features_standard_ops`` is the
same math in plain tensor ops with symbolic B and P, for ONNX graphs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from defr.choices import DEFAULT_MASK_MODE
from defr.kernels import ATTENTION_BACKENDS, PairOp, pair_masked_attention
from defr.kernels.spec import box_masks, box_patch_ranges, cls_attention_bias, pair_masks

__all__ = [
    "ATTENTION_BACKENDS",
    "PairOp",
    "box_masks",
    "box_patch_ranges",
    "cls_attention_bias",
    "last_block_qkv",
    "pair_attention_standard_ops",
    "pair_cls_features",
    "pair_cls_features_standard_ops",
    "pair_masks",
]


def last_block_qkv(block: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """tokens: [B, L, D], the input of ``block`` → (q_cls [B, D], k [B, L, D], v [B, L, D]), heads
    concatenated along D (views of one fused projection)."""
    qkv = F.linear(block.ln_1(tokens), block.attn.in_proj_weight, block.attn.in_proj_bias)
    q, k, v = qkv.chunk(3, dim=-1)
    return q[:, 0], k, v


def _finish(block: nn.Module, cls_tokens: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
    """The rest of the block for each pair's CLS: out-projection, residual, MLP, residual. [P, D] → [P, D]."""
    x = cls_tokens + block.attn.out_proj(mixed)
    return x + block.mlp(block.ln_2(x))


def pair_cls_features(
    block: nn.Module,
    tokens: torch.Tensor,
    boxes_h: torch.Tensor,
    boxes_o: torch.Tensor,
    pair_index: torch.Tensor,
    *,
    image_size: int,
    patch_size: int,
    mask_mode: str = DEFAULT_MASK_MODE,
    attention: str = "auto",
) -> torch.Tensor:
    """Output CLS token of the last block for each pair, through the pair-attention op.

    block: a ``ResidualAttentionBlock``; tokens: [B, L, D], its input (L = 1 + G², CLS first);
    boxes_h, boxes_o: [P, 4] float32, pixels of the S×S input; pair_index: [P] long. attention:
    ``auto`` (Triton on CUDA, the grouped PyTorch path elsewhere), ``triton`` or ``reference``
    (``defr.kernels``). Returns [P, D].
    """
    op = PairOp(block.attn.heads, image_size // patch_size, image_size, mask_mode)
    q_cls, k, v = last_block_qkv(block, tokens)
    boxes_h, boxes_o, pair_index = boxes_h.float(), boxes_o.float(), pair_index.long()
    mixed = pair_masked_attention(q_cls, k, v, boxes_h, boxes_o, pair_index, op, backend=attention)
    return _finish(block, tokens[pair_index, 0], mixed)


def pair_attention_standard_ops(
    q_cls: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, pair_index: torch.Tensor, heads: int
) -> torch.Tensor:
    """The pair-attention op in plain tensor ops that export to ONNX with symbolic B and P.

    q_cls: [B, D]; k, v: [B, L, D]; bias: [P, L] float added to each pair's CLS scores
    (``cls_attention_bias``); pair_index: [P] long → [P, D], heads concatenated. The weighted sum
    runs every pair against every image's V and keeps the pair's own image (B·P·L·D work): no
    data-dependent shapes, and for the frame batches an exported graph sees (B = 1..8) small next
    to the backbone.
    """
    b, n, d = k.shape
    dh = d // heads
    q = q_cls.reshape(b, heads, 1, dh)
    k = k.reshape(b, n, heads, dh).transpose(1, 2)  # [B, H, L, dh]
    v = v.reshape(b, n, heads, dh).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2)).squeeze(2) * dh**-0.5  # [B, H, L]; pair-independent
    weights = (scores[pair_index] + bias[:, None, :].to(scores.dtype)).softmax(dim=-1)  # [P, H, L]
    per_image = torch.einsum("phl,bhld->pbhd", weights, v)  # [P, B, H, dh]
    mixed = per_image[torch.arange(pair_index.shape[0], device=pair_index.device), pair_index]  # [P, H, dh]
    return mixed.flatten(1)


def pair_cls_features_standard_ops(
    block: nn.Module, tokens: torch.Tensor, bias: torch.Tensor, pair_index: torch.Tensor
) -> torch.Tensor:
    """``pair_cls_features`` through ``pair_attention_standard_ops`` (for ONNX graphs).

    bias: [P, L] (``cls_attention_bias``); returns [P, D].
    """
    q_cls, k, v = last_block_qkv(block, tokens)
    mixed = pair_attention_standard_ops(q_cls, k, v, bias, pair_index, block.attn.heads)
    return _finish(block, tokens[pair_index, 0], mixed)
