"""The masked pair attention as a PyTorch op, and its one front door ``pair_masked_attention``.

``torch.ops.defr.pair_masked_attention`` is a ``torch.library.custom_op``: CPU (and any device
without its own kernel) runs ``pair_attention_grouped``; CUDA runs the Triton kernel when
Triton is installed, else the grouped path. Its fake kernel gives [P, D] from the input shapes,
so ``torch.compile(fullgraph=True)`` and ``torch.export`` (P dynamic) see one opaque node.

``pair_masked_attention(..., backend=)`` picks the implementation:

- ``auto``: the custom op (the choice above). The one to use in models: compiles and exports.
- ``triton``: the Triton kernel. CUDA tensors; CPU tensors only through Triton's interpreter
  (TRITON_INTERPRET=1 set before triton is first imported: slow, for tests).
- ``reference``: ``pair_attention_grouped`` on any device.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

from defr.errors import ConfigError
from defr.kernels.reference import pair_attention_grouped
from defr.kernels.spec import PairOp, check_inputs, check_pair_index_values
from defr.optional import import_triton

ATTENTION_BACKENDS = ("auto", "triton", "reference")


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _run_triton(q_cls, k, v, boxes_h, boxes_o, pair_index, op: PairOp) -> Tensor:
    import_triton("backend='triton' (or use backend='reference')")
    # Imported here: triton is optional, and the kernel module imports it at the top.
    from defr.kernels.triton_pair_attention import triton_pair_attention

    return triton_pair_attention(q_cls, k, v, boxes_h, boxes_o, pair_index, op)


def _run_grouped(q_cls, k, v, boxes_h, boxes_o, pair_index, op: PairOp) -> Tensor:
    if pair_index.device.type == "cpu":
        check_pair_index_values(pair_index, q_cls.shape[0])
    return pair_attention_grouped(q_cls, k, v, boxes_h, boxes_o, pair_index, op)


# The custom op takes the ``PairOp`` as its scalars (a torch.library op has no dataclass arguments).
@torch.library.custom_op("defr::pair_masked_attention", mutates_args=())
def pair_masked_attention_op(
    q_cls: Tensor,
    k: Tensor,
    v: Tensor,
    boxes_h: Tensor,
    boxes_o: Tensor,
    pair_index: Tensor,
    heads: int,
    grid_size: int,
    image_size: int,
    mask_mode: str,
) -> Tensor:
    """``defr::pair_masked_attention``; the default kernel (CPU and others): the grouped path."""
    args = (q_cls, k, v, boxes_h, boxes_o, pair_index, PairOp(heads, grid_size, image_size, mask_mode))
    check_inputs(*args)
    return _run_grouped(*args)


@pair_masked_attention_op.register_kernel("cuda")
def _cuda(q_cls, k, v, boxes_h, boxes_o, pair_index, heads, grid_size, image_size, mask_mode):
    args = (q_cls, k, v, boxes_h, boxes_o, pair_index, PairOp(heads, grid_size, image_size, mask_mode))
    check_inputs(*args)
    return _run_triton(*args) if triton_available() else _run_grouped(*args)


@pair_masked_attention_op.register_fake
def _fake(q_cls, k, v, boxes_h, boxes_o, pair_index, heads, grid_size, image_size, mask_mode):
    check_inputs(q_cls, k, v, boxes_h, boxes_o, pair_index, PairOp(heads, grid_size, image_size, mask_mode))
    return q_cls.new_empty(pair_index.shape[0], q_cls.shape[1])


def pair_masked_attention(
    q_cls: Tensor,
    k: Tensor,
    v: Tensor,
    boxes_h: Tensor,
    boxes_o: Tensor,
    pair_index: Tensor,
    op: PairOp,
    *,
    backend: str = "auto",
) -> Tensor:
    """Each pair's CLS attention over its image in the last ViT block, heads concatenated.

    ``out[p, h] = softmax(q_cls[b, h] · k[b, :, h]ᵀ / √dh + bias_p) · v[b, :, h]``, b = pair_index[p]
    (the rule and modes: ``defr.kernels.spec``).

    Args:
        q_cls: [B, D] CLS query of each image (after ``ln_1`` and the in-projection).
        k, v: [B, L, D], L = 1 + G² (CLS first, patches row-major); views of a fused [B, L, 3D]
            qkv tensor are fine.
        boxes_h, boxes_o: [P, 4] float32 (x1, y1, x2, y2), pixels of the S×S input.
        pair_index: [P] int64, the image of each pair, any order.
        op: the attributes (``PairOp``): heads H (D splits into H heads of D / H), grid_size G,
            image_size S (a multiple of G), mask_mode ``hard`` (paper: −inf outside the boxes) or
            ``released`` (+1 outside).
        backend: ``auto``, ``triton`` or ``reference`` (module docstring).

    Returns:
        [P, D] in q_cls's dtype (float32, float16 or bfloat16; computed in float32).

    Raises:
        ConfigError: an unknown backend, shapes or dtypes that disagree (the message
            names the argument and its shape), ``triton`` without Triton, or on CPU tensors without
            Triton's interpreter (TRITON_INTERPRET=1 when triton was imported).
    """
    if backend not in ATTENTION_BACKENDS:
        raise ConfigError(f"backend must be one of {ATTENTION_BACKENDS}, not {backend!r}")
    args = (q_cls, k, v, boxes_h, boxes_o, pair_index, op)
    if backend == "auto" and (torch.compiler.is_compiling() or q_cls.device.type != "cpu"):
        return torch.ops.defr.pair_masked_attention(*args[:-1], *op.scalars())
    # Eager on a CPU, the op would run this very path behind a dispatch that costs ~0.3 ms a call.
    check_inputs(*args)
    return _run_triton(*args) if backend == "triton" else _run_grouped(*args)
