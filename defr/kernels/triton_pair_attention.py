"""The masked pair attention as one Triton kernel (contract: ``defr.kernels.spec``).

Written against Triton 3.x and run only through Triton 3.8's CPU interpreter (TRITON_INTERPRET=1,
which Triton reads once, when it is first imported); compiled to PTX for sm_90 by Triton 3.8
without a GPU. Not run on a GPU; the GPU machine it targets has Triton 3.6. Triton API used:
``triton.jit(do_not_specialize=)``, ``tl.constexpr``, masked ``tl.load``/``tl.store``, ``tl.sum``,
``tl.max``, ``tl.exp``, ``tl.floor``/``tl.ceil``, ``tl.where``, ``tl.full``, ``.to(..., bitcast=True)``,
``range`` loops with a runtime bound, and for the TensorRT plugin ``triton.compiler.ASTSource``
with a ``{name: type}`` signature and ``constexprs=`` (the 3.2+ form).

Layout. One program per (pair, head): grid (P, H). A program loads its pair's image index and
boxes, the head's dh-slice of ``q_cls[b]`` and keeps an online (flash-style) softmax in float32:
running max ``m``, normaliser ``l`` and the [dh] accumulator. The CLS key opens it (always
visible, bias 0), so ``m`` is finite from the start and a pair whose boxes cover nothing ends
with ``v[b, 0]`` and no NaN. Why per (pair, head) rather than per pair: P is often small (a
frame has tens of pairs), and H programs per pair keep a GPU busy; each program's tile is
[BLOCK_N, dh] (a few registers per thread) and the H programs of a pair read disjoint column
slices of the same key rows, so total memory traffic is that of one program per pair.

Which keys are read. ``hard`` mode reads only the patches inside the two boxes: one flat range of
indices over the human rectangle's h·w patches followed by the object rectangle's, each index t
of a rectangle mapped to patch (r0 + t // w, c0 + t % w), in tiles of BLOCK_N keys. Object
patches inside the human rectangle are masked out (the union counted once), and masked lanes
load nothing. A box's row of patches is often narrower than a tile; the flat range fills the
tiles, and a tile may hold the end of one rectangle and the start of the other. The per-pair
cost follows the box areas, not L. ``released`` mode reads all G² patches, +1 outside both boxes.

Box → patch rule, exactly ``defr.kernels.spec.box_patch_ranges``: ``box · (G/S)`` in
float32 with G/S rounded to float32 (it arrives as int32 bits, ``spec.box_scale_bits``), floor
for (x1, y1), ceil for (x2, y2), clamped to [0, G].

Dtypes: q, k, v float32, float16 or bfloat16, loaded and accumulated in float32, the output in
the input dtype. Boxes float32, pair_index int64. Strides of q, k, v are passed explicitly, so k
and v may be views of a fused qkv tensor [B, L, 3D]. Non-constexpr arguments are ordered inputs,
int32 scalars, output: the calling convention of TensorRT's AOT plugins.
"""

from __future__ import annotations

from dataclasses import dataclass

import triton
import triton.language as tl
from torch import Tensor

from defr.errors import ConfigError
from defr.kernels.spec import PairOp, box_scale_bits

BLOCK_N = 64  # keys per tile
NUM_WARPS = 4
# Non-constexpr scalars, in kernel order (after the six input pointers, before the output pointer).
SCALAR_ARGS = (
    "stride_qb",
    "stride_qd",
    "stride_kb",
    "stride_kl",
    "stride_kd",
    "stride_vb",
    "stride_vl",
    "stride_vd",
    "grid_size",
    "scale_bits",
)
CONSTEXPR_ARGS = ("HEADS", "HEAD_DIM", "MASKED", "SM_SCALE", "BLOCK_N", "BLOCK_D")


# grid_size and scale_bits are used as tensors (cast, bitcast): never specialise them to constants.
@triton.jit(do_not_specialize=["grid_size", "scale_bits"])
def pair_attention_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    boxes_h_ptr,
    boxes_o_ptr,
    pair_index_ptr,
    stride_qb,
    stride_qd,
    stride_kb,
    stride_kl,
    stride_kd,
    stride_vb,
    stride_vl,
    stride_vd,
    grid_size,
    scale_bits,
    out_ptr,
    HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    MASKED: tl.constexpr,
    SM_SCALE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Grid (P, HEADS). out: contiguous [P, HEADS·HEAD_DIM]. MASKED: hard mode, else released."""
    pair = tl.program_id(0)
    head = tl.program_id(1)
    image = tl.load(pair_index_ptr + pair)  # int64: image offsets never overflow
    d = tl.arange(0, BLOCK_D)
    d_mask = d < HEAD_DIM
    col = head * HEAD_DIM + d
    q = tl.load(q_ptr + image * stride_qb + col * stride_qd, mask=d_mask, other=0.0).to(tl.float32)
    k_row = k_ptr + image * stride_kb + col * stride_kd  # [BLOCK_D] pointers into key 0
    v_row = v_ptr + image * stride_vb + col * stride_vd

    # CLS opens the softmax: m finite, l = 1, acc = v_cls.
    k_cls = tl.load(k_row, mask=d_mask, other=0.0).to(tl.float32)
    m = tl.sum(k_cls * q, axis=0) * SM_SCALE
    l_sum = tl.full([], 1.0, tl.float32)
    acc = tl.load(v_row, mask=d_mask, other=0.0).to(tl.float32)

    # Patch ranges of the two boxes: box · (G/S) in float32, floor / ceil, clamped to [0, G].
    scale = scale_bits.to(tl.float32, bitcast=True)
    grid_f = grid_size.to(tl.float32)
    bh = boxes_h_ptr + pair * 4
    bo = boxes_o_ptr + pair * 4
    hc0 = tl.minimum(tl.maximum(tl.floor(tl.load(bh) * scale), 0.0), grid_f).to(tl.int32)
    hr0 = tl.minimum(tl.maximum(tl.floor(tl.load(bh + 1) * scale), 0.0), grid_f).to(tl.int32)
    hc1 = tl.minimum(tl.maximum(tl.ceil(tl.load(bh + 2) * scale), 0.0), grid_f).to(tl.int32)
    hr1 = tl.minimum(tl.maximum(tl.ceil(tl.load(bh + 3) * scale), 0.0), grid_f).to(tl.int32)
    oc0 = tl.minimum(tl.maximum(tl.floor(tl.load(bo) * scale), 0.0), grid_f).to(tl.int32)
    or0 = tl.minimum(tl.maximum(tl.floor(tl.load(bo + 1) * scale), 0.0), grid_f).to(tl.int32)
    oc1 = tl.minimum(tl.maximum(tl.ceil(tl.load(bo + 2) * scale), 0.0), grid_f).to(tl.int32)
    or1 = tl.minimum(tl.maximum(tl.ceil(tl.load(bo + 3) * scale), 0.0), grid_f).to(tl.int32)

    # The keys to read, as one flat range t: hard mode, the human rectangle's patches then the
    # object rectangle's (those inside the human one masked out); released mode, all G² patches.
    h_width = tl.maximum(hc1 - hc0, 0)
    o_width = tl.maximum(oc1 - oc0, 0)
    h_count = h_width * tl.maximum(hr1 - hr0, 0)
    total = h_count + o_width * tl.maximum(or1 - or0, 0) if MASKED else grid_size * grid_size
    lanes = tl.arange(0, BLOCK_N)
    for start in range(0, total, BLOCK_N):
        t = start + lanes
        valid = t < total
        t = tl.where(valid, t, 0)  # keeps the addresses of masked lanes in range
        if MASKED:
            in_obj = t >= h_count
            u = tl.where(in_obj, t - h_count, t)
            width = tl.maximum(tl.where(in_obj, o_width, h_width), 1)  # 0 only where no lane is valid
            r = tl.where(in_obj, or0, hr0) + u // width
            c = tl.where(in_obj, oc0, hc0) + u % width
            valid = valid & ~(in_obj & (r >= hr0) & (r < hr1) & (c >= hc0) & (c < hc1))
            bias = tl.zeros([BLOCK_N], dtype=tl.float32)
        else:
            r = t // grid_size
            c = t % grid_size
            inside = ((r >= hr0) & (r < hr1) & (c >= hc0) & (c < hc1)) | (
                (r >= or0) & (r < or1) & (c >= oc0) & (c < oc1)
            )
            bias = tl.where(inside, 0.0, 1.0)
        key = 1 + r * grid_size + c
        tile_mask = valid[:, None] & d_mask[None, :]
        keys = tl.load(k_row[None, :] + key[:, None] * stride_kl, mask=tile_mask, other=0.0).to(tl.float32)
        scores = tl.sum(keys * q[None, :], axis=1) * SM_SCALE + bias
        scores = tl.where(valid, scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=0))  # finite, as m is
        alpha = tl.exp(m - m_new)
        p = tl.exp(scores - m_new)
        values = tl.load(v_row[None, :] + key[:, None] * stride_vl, mask=tile_mask, other=0.0).to(tl.float32)
        acc = acc * alpha + tl.sum(p[:, None] * values, axis=0)
        l_sum = l_sum * alpha + tl.sum(p, axis=0)
        m = m_new
    out = acc / l_sum
    tl.store(out_ptr + pair * (HEADS * HEAD_DIM) + col, out.to(out_ptr.dtype.element_ty), mask=d_mask)


@dataclass(frozen=True)
class KernelConfig:
    """Compile-time choices of one launch: the kernel's constexprs and warps; grid (P, heads)."""

    heads: int
    head_dim: int
    masked: bool
    block_n: int
    num_warps: int = NUM_WARPS

    @property
    def block_d(self) -> int:
        return triton.next_power_of_2(self.head_dim)

    @property
    def sm_scale(self) -> float:
        return self.head_dim**-0.5

    def constexprs(self) -> dict[str, int | bool | float]:
        """Keyword arguments of a launch, in ``CONSTEXPR_ARGS`` order."""
        values = (self.heads, self.head_dim, self.masked, self.sm_scale, self.block_n, self.block_d)
        return dict(zip(CONSTEXPR_ARGS, values, strict=True))


def kernel_config(dim: int, op: PairOp) -> KernelConfig:
    """Constexprs for D = ``dim`` split in ``op.heads``; tiles no longer than the G² patches."""
    block_n = min(BLOCK_N, triton.next_power_of_2(op.grid_size * op.grid_size))
    return KernelConfig(heads=op.heads, head_dim=dim // op.heads, masked=op.masked, block_n=block_n)


def kernel_signature(dtype: str) -> dict[str, str]:
    """Argument types for ``triton.compiler.ASTSource`` (AOT compilation); dtype: fp32, fp16, bf16.

    Integer scalars are int32 (TensorRT's AOT plugins pass int32 extra arguments)."""
    tensors = {f"{n}_ptr": f"*{dtype}" for n in ("q", "k", "v")}
    tensors |= {"boxes_h_ptr": "*fp32", "boxes_o_ptr": "*fp32", "pair_index_ptr": "*i64"}
    scalars = dict.fromkeys(SCALAR_ARGS, "i32")
    constexprs = dict.fromkeys(CONSTEXPR_ARGS, "constexpr")
    return tensors | scalars | {"out_ptr": f"*{dtype}"} | constexprs


def interpreted() -> bool:
    """Whether the kernel runs in Triton's interpreter: Triton decides once, when it is first imported,
    from TRITON_INTERPRET (its standard library, tl.sum and the like, is built then)."""
    return not isinstance(pair_attention_kernel, triton.runtime.JITFunction)


def launch(
    q_cls: Tensor, k: Tensor, v: Tensor, boxes_h: Tensor, boxes_o: Tensor, pair_index: Tensor, out: Tensor, op: PairOp
) -> None:
    """Write the pair attention into ``out`` (contiguous [P, D], q_cls's dtype).

    Inputs are assumed valid (``spec.check_inputs``). CUDA tensors run the compiled kernel; CPU
    tensors run only in Triton's interpreter (``interpreted``).
    """
    p, d = pair_index.shape[0], q_cls.shape[1]
    if p == 0:
        return
    if q_cls.device.type == "cpu" and not interpreted():
        raise ConfigError(
            "the Triton kernel needs CUDA tensors (these are on the CPU); to run it through Triton's interpreter, "
            "set TRITON_INTERPRET=1 before triton is first imported; or use backend='reference'"
        )
    cfg = kernel_config(d, op)
    pair_attention_kernel[(p, op.heads)](
        q_cls,
        k,
        v,
        boxes_h.contiguous(),
        boxes_o.contiguous(),
        pair_index.contiguous(),
        *q_cls.stride(),
        *k.stride(),
        *v.stride(),
        op.grid_size,
        box_scale_bits(op),
        out,
        **cfg.constexprs(),
        num_warps=cfg.num_warps,
    )


def triton_pair_attention(
    q_cls: Tensor, k: Tensor, v: Tensor, boxes_h: Tensor, boxes_o: Tensor, pair_index: Tensor, op: PairOp
) -> Tensor:
    """The pair attention by the Triton kernel → [P, D] in q_cls's dtype (see ``launch``)."""
    out = q_cls.new_empty(pair_index.shape[0], q_cls.shape[1])
    launch(q_cls, k, v, boxes_h, boxes_o, pair_index, out, op)
    return out
