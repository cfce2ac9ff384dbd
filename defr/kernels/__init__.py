"""Fused masked pair attention (DEFR mask-1): reference, Triton kernel, custom op, TensorRT plugin.

Front door: ``pair_masked_attention`` (registers ``torch.ops.defr.pair_masked_attention`` on
import). ``defr.kernels.triton_pair_attention`` needs Triton and ``defr.kernels.tensorrt_plugin``
TensorRT; neither is imported here. See ``docs/kernels.md``.
"""

from defr.kernels.ops import ATTENTION_BACKENDS, pair_masked_attention
from defr.kernels.reference import pair_attention_grouped, pair_attention_reference
from defr.kernels.spec import PairOp

__all__ = [
    "ATTENTION_BACKENDS",
    "PairOp",
    "pair_attention_grouped",
    "pair_attention_reference",
    "pair_masked_attention",
]
