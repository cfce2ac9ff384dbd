"""PyTorch implementations of the masked pair attention (contract: ``defr.kernels.spec``).

- ``pair_attention_reference``: the slow, obviously right one. It gathers each pair's keys and
  values ([P, L, D]) and builds the [P, L] bias from the box rule (``spec.pair_bias``).
  Tests compare everything else against it.
- ``pair_attention_grouped``: the CPU path of the op. The CLS scores depend on the image only, so
  they are computed once per image ([B, H, L]); each pair indexes them and adds its bias
  ([P, H, L]); the weighted sums of V are done per image, one matmul over that image's pairs.
  Cost O(B·L·D + P·L·D), never a [P, L, D] gather and never B·P·L·D.

Both compute in float32 and return the input dtype. Inputs are assumed valid
(``spec.check_inputs``); P = 0 gives a [0, D] result.
"""

from __future__ import annotations

import torch
from torch import Tensor

from defr.kernels.spec import PairOp, pair_bias, pair_masks


def pair_attention_reference(
    q_cls: Tensor, k: Tensor, v: Tensor, boxes_h: Tensor, boxes_o: Tensor, pair_index: Tensor, op: PairOp
) -> Tensor:
    """q_cls: [B, D]; k, v: [B, L, D], L = 1 + G²; boxes_h, boxes_o: [P, 4] float32 pixels of the
    S×S input; pair_index: [P] int64; op: the attributes → [P, D] in q_cls's dtype (heads concatenated)."""
    p, (_, seq, d), heads = pair_index.shape[0], k.shape, op.heads
    dh = d // heads
    bias = pair_bias(boxes_h, boxes_o, op)
    q = q_cls.float()[pair_index].reshape(p, heads, 1, dh)
    keys = k.float()[pair_index].reshape(p, seq, heads, dh).transpose(1, 2)  # [P, H, L, dh]
    values = v.float()[pair_index].reshape(p, seq, heads, dh).transpose(1, 2)
    scores = (q @ keys.transpose(-1, -2)) * dh**-0.5 + bias[:, None, None, :]  # [P, H, 1, L]
    out = scores.softmax(dim=-1) @ values  # [P, H, 1, dh]
    return out.reshape(p, d).to(q_cls.dtype)


def pair_attention_grouped(
    q_cls: Tensor, k: Tensor, v: Tensor, boxes_h: Tensor, boxes_o: Tensor, pair_index: Tensor, op: PairOp
) -> Tensor:
    """Same contract as ``pair_attention_reference``, O(B·L·D + P·L·D) work (module docstring).

    The pairs are put in image order first (only their boxes and indices move: the [P, H, L]
    weights are built in that order, so no large tensor is gathered twice), then each image's
    pairs are one slice and one batched matmul against that image's values.
    """
    p, (b, seq, d), heads = pair_index.shape[0], k.shape, op.heads
    dh = d // heads
    if p == 0:
        return q_cls.new_empty(0, d)
    in_order = p == 1 or bool((pair_index[1:] >= pair_index[:-1]).all())
    order = None if in_order else torch.argsort(pair_index, stable=True)
    if order is not None:
        boxes_h, boxes_o, pair_index = boxes_h[order], boxes_o[order], pair_index[order]
    q = q_cls.float().reshape(b, heads, 1, dh)
    keys = k.float().reshape(b, seq, heads, dh).permute(0, 2, 3, 1)  # [B, H, dh, L]
    scores = (q @ keys).squeeze(2).mul_(dh**-0.5)  # [B, H, L]: pair-independent
    outside = ~pair_masks(boxes_h, boxes_o, op.image_size, op.patch_size)[:, None, :]  # [P, 1, G²]
    weights = scores[pair_index]  # [P, H, L]
    if op.masked:  # the bias of ``pair_bias``, applied in place on the patch columns
        weights[:, :, 1:].masked_fill_(outside, float("-inf"))
    else:
        weights[:, :, 1:].add_(outside.to(weights.dtype))
    weights = weights.softmax(dim=-1)
    values = v.float().reshape(b, seq, heads, dh).transpose(1, 2)  # [B, H, L, dh]
    out = torch.empty(p, heads, dh, device=q.device)
    start = 0
    for image, n in enumerate(torch.bincount(pair_index, minlength=b).tolist()):
        if n:
            chunk = weights[start : start + n].transpose(0, 1)  # [H, n, L]
            out[start : start + n] = (chunk @ values[image]).transpose(0, 1)
            start += n
    if order is not None:
        out = torch.empty_like(out).index_copy_(0, order, out)
    return out.reshape(p, d).to(q_cls.dtype)
