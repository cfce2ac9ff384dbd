"""The contract of the masked pair-attention op, shared by every implementation (a leaf: it imports
only ``defr.errors`` and ``defr.choices``; the model, the runtime and the exporter import the box rule from here).

Per human–object pair p (image ``b = pair_index[p]``) and head h, with dh = D / heads:
``out[p, h] = softmax(q_cls[b, h] · k[b, :, h]ᵀ / √dh + bias_p) · v[b, :, h]``.
Keys are the L = 1 + G² tokens of the last ViT block (CLS first, then patches row-major).
``bias_p`` comes from the pair's two boxes by the patch rule of ``box_patch_ranges`` (DESIGN §3):
``c0 = floor(x1·G/S)``, ``c1 = ceil(x2·G/S)``, rows alike, clamped to [0, G]; the CLS key always
has bias 0.

The op's non-tensor attributes travel together as one frozen ``PairOp(heads, grid_size,
image_size, mask_mode)``, validated once when it is made: the kernels, the reference, the custom
op's front door, the ONNX plugin node and the TensorRT plugin all take it.

Mask modes (``defr.choices.MASK_MODES``):

- ``hard`` (the paper): bias 0 for patches inside the human or the object box, −inf elsewhere.
- ``released`` (the released code's arithmetic: its bool mask is added as a float): +1 for
  patches outside both boxes, 0 inside; nothing is masked.

A pair whose boxes cover no patch attends to CLS alone: its output is ``v[b, 0]``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import torch
from torch import Tensor

from defr.choices import DEFAULT_MASK_MODE, MaskMode, check_mask_mode
from defr.errors import ConfigError

ATTENTION_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class PairOp:
    """The pair op's attributes: ``heads`` H (D splits into H heads of D / H), ``grid_size`` G
    (patches per side), ``image_size`` S (pixels per side of the input the boxes are in, a multiple
    of G) and ``mask_mode`` (module docstring). ``ConfigError`` naming the first one not allowed."""

    heads: int
    grid_size: int
    image_size: int
    mask_mode: MaskMode = DEFAULT_MASK_MODE

    def __post_init__(self) -> None:
        check_mask_mode(self.mask_mode)
        if self.heads < 1:
            raise ConfigError(f"heads must be >= 1, not {self.heads}")
        if self.grid_size < 1:
            raise ConfigError(f"grid_size must be >= 1, not {self.grid_size}")
        if self.image_size < 1 or self.image_size % self.grid_size:
            raise ConfigError(
                f"image_size {self.image_size} must be a positive multiple of grid_size {self.grid_size} "
                "(the boxes are in pixels of the S×S input, S = grid_size · patch size)"
            )

    @property
    def patch_size(self) -> int:
        return self.image_size // self.grid_size

    @property
    def masked(self) -> bool:
        """Whether patches outside the boxes are masked out (``hard``), rather than biased (``released``)."""
        return self.mask_mode == "hard"

    def scalars(self) -> tuple[int, int, int, str]:
        """(heads, grid_size, image_size, mask_mode): the custom op's and the ONNX node's scalar arguments."""
        return self.heads, self.grid_size, self.image_size, self.mask_mode


def box_patch_ranges(boxes: Tensor, image_size: int, patch_size: int) -> Tensor:
    """boxes: [P, 4] float (x1, y1, x2, y2), pixels of the S×S input → [P, 4] long (c0, r0, c1, r1).

    ``c0 = floor(x1·G/S)``, ``c1 = ceil(x2·G/S)`` (rows alike), clamped to [0, G]; the box covers
    patches ``r0 ≤ r < r1`` and ``c0 ≤ c < c1``. G/S is applied as a float32 factor (the kernels
    use the same one: ``box_scale_bits``).
    """
    grid = image_size // patch_size
    scaled = boxes * (grid / image_size)
    lo = torch.floor(scaled[:, :2])
    hi = torch.ceil(scaled[:, 2:])
    return torch.cat([lo, hi], dim=1).clamp(0, grid).long()


def box_masks(boxes: Tensor, image_size: int, patch_size: int) -> Tensor:
    """boxes: [P, 4] pixels of the S×S input → [P, G*G] bool, patches (row-major) inside each box."""
    grid = image_size // patch_size
    c0, r0, c1, r1 = box_patch_ranges(boxes, image_size, patch_size).unbind(1)
    idx = torch.arange(grid, device=boxes.device)
    rows = (idx >= r0[:, None]) & (idx < r1[:, None])  # [P, G]
    cols = (idx >= c0[:, None]) & (idx < c1[:, None])  # [P, G]
    return (rows[:, :, None] & cols[:, None, :]).flatten(1)


def pair_masks(boxes_h: Tensor, boxes_o: Tensor, image_size: int, patch_size: int) -> Tensor:
    """boxes_h, boxes_o: [P, 4] pixels of the S×S input → [P, G*G] bool, patches the pair's CLS may see."""
    return box_masks(boxes_h, image_size, patch_size) | box_masks(boxes_o, image_size, patch_size)


def cls_attention_bias(visible: Tensor, mask_mode: str, dtype: torch.dtype = torch.float32) -> Tensor:
    """visible: [P, N] bool patches inside the pair's boxes → [P, 1 + N] additive bias of the CLS
    row's scores (column 0: the CLS key, always 0), for ``mask_mode`` (module docstring)."""
    outside = -float("inf") if check_mask_mode(mask_mode) == "hard" else 1.0
    bias = torch.where(visible, 0.0, outside).to(dtype)
    return torch.cat([bias.new_zeros(bias.shape[0], 1), bias], dim=1)


def pair_bias(boxes_h: Tensor, boxes_o: Tensor, op: PairOp) -> Tensor:
    """boxes_h, boxes_o: [P, 4] float32, pixels of the S×S input → [P, 1 + G²] float32 bias."""
    return cls_attention_bias(pair_masks(boxes_h, boxes_o, op.image_size, op.patch_size), op.mask_mode)


def check_inputs(
    q_cls: Tensor, k: Tensor, v: Tensor, boxes_h: Tensor, boxes_o: Tensor, pair_index: Tensor, op: PairOp
) -> None:
    """Shapes, dtypes and devices of the op's tensor arguments (``op`` is valid by construction);
    ``ConfigError`` naming the argument.

    Only metadata is read (no values), so this also runs on fake tensors with a symbolic P.
    """
    heads, grid_size = op.heads, op.grid_size
    if q_cls.dim() != 2:
        raise ConfigError(f"q_cls must be [B, D], not {tuple(q_cls.shape)}")
    b, d = q_cls.shape
    seq = 1 + grid_size * grid_size
    for name, t in (("k", k), ("v", v)):
        if tuple(t.shape) != (b, seq, d):
            raise ConfigError(
                f"{name} must be [B, 1 + G², D] = [{b}, {seq}, {d}] (q_cls is {tuple(q_cls.shape)}, "
                f"grid_size {grid_size}), not {tuple(t.shape)}"
            )
    if d % heads:
        raise ConfigError(f"D = {d} (q_cls {tuple(q_cls.shape)}) is not divisible by heads {heads}")
    for name, t in (("q_cls", q_cls), ("k", k), ("v", v)):
        if t.dtype not in ATTENTION_DTYPES:
            raise ConfigError(f"{name} must be float32, float16 or bfloat16, not {t.dtype}")
        if t.dtype != q_cls.dtype:
            raise ConfigError(f"{name} is {t.dtype} but q_cls is {q_cls.dtype}: pass one dtype")
    if pair_index.dim() != 1 or pair_index.dtype != torch.int64:
        raise ConfigError(f"pair_index must be int64 [P], not {pair_index.dtype} {tuple(pair_index.shape)}")
    p = pair_index.shape[0]
    for name, t in (("boxes_h", boxes_h), ("boxes_o", boxes_o)):
        if t.dim() != 2 or t.shape[0] != p or t.shape[1] != 4:
            raise ConfigError(f"{name} must be [P, 4] = [{p}, 4] (pair_index is [{p}]), not {tuple(t.shape)}")
        if t.dtype != torch.float32:
            raise ConfigError(f"{name} must be float32 (pixel coordinates), not {t.dtype}")
    devices = {t.device for t in (q_cls, k, v, boxes_h, boxes_o, pair_index)}
    if len(devices) > 1:
        raise ConfigError(f"all inputs must be on one device, not {sorted(str(x) for x in devices)}")


def check_pair_index_values(pair_index: Tensor, batch: int) -> None:
    """``ConfigError`` unless every ``pair_index`` lies in [0, B). Reads values: CPU tensors only,
    since on a GPU the check would stall the stream."""
    if pair_index.numel() and (int(pair_index.min()) < 0 or int(pair_index.max()) >= batch):
        raise ConfigError(
            f"pair_index values must lie in [0, {batch}) (B = q_cls.shape[0]), "
            f"not [{int(pair_index.min())}, {int(pair_index.max())}]"
        )


def box_scale_bits(op: PairOp) -> int:
    """G / S rounded to float32, as the bits of an int32.

    ``box_patch_ranges`` multiplies float32 boxes by the Python float G / S, which PyTorch rounds
    to float32 first; the kernel must use that very factor. It travels as int32 bits because
    TensorRT's AOT plugins pass only integer scalars.
    """
    return struct.unpack("<i", struct.pack("<f", op.grid_size / op.image_size))[0]
