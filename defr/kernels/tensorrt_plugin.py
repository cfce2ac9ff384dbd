"""TensorRT plugin ``defr::PairMaskedAttention``: the Triton pair-attention kernel inside an engine.

NOT RUN: written against NVIDIA's documented Python plugin API (``tensorrt.plugin``, "quickly
deployable plugins") and its samples, without TensorRT or a GPU. What is tested here: the
version checks, the attribute checks, the missing-package error, the AOT launch parameters and
the AOT compilation of the kernel to PTX for sm_90 (Triton compiles without a GPU).

- ``@trtp.register``: inputs q_cls [B, D], k, v [B, L, D] (float32 or float16, one dtype),
  boxes_h, boxes_o [P, 4] float32, pair_index [P] int64; attributes ``grid_size``, ``heads``,
  ``image_size`` (int) and ``mask_mode`` (str, ``hard`` or ``released``); output [P, D] from
  ``boxes_h.shape_expr[0]`` and ``q_cls.shape_expr[1]``, q_cls's dtype.
- ``@trtp.aot_impl`` (TensorRT >= 10.9): compiles the kernel to PTX at engine build time and
  returns it with its launch parameters; the engine then runs without Python (``trtexec``).
  AOT plugins do not serialize attributes, so everything they decide is baked in: heads, D / heads
  and the mode as constexprs; G, the float32 box scale (as int32 bits) and the strides of
  TensorRT's linear (row-major) tensors as int32 scalar arguments (D must be static; L = 1 + G²).
  Kernel arguments are ordered inputs, scalars, output, as TensorRT passes them.
  Triton appends two scratch pointers to every kernel; TensorRT passes null for arguments it was
  not given, which is what Triton passes when their sizes are 0, so compilation checks they are 0.
- ``@trtp.impl``: the JIT fallback, a Python callback that runs the same kernel on torch views of
  TensorRT's buffers (needs Python, torch and Triton at inference).

In ONNX: a node of op ``PairMaskedAttention`` with the four attributes. TensorRT >= 10.10 reads the
plugin namespace from the node's domain (``defr``); older parsers need a ``plugin_namespace``
attribute, and an ``aot`` attribute asks the parser for the AOT implementation
(``defr.export.plugin_node`` writes both; ``check_onnx_node`` checks a node against a TensorRT
version). Minimum versions: QDP 10.6, AOT 10.9, domain as namespace 10.10. Needs Triton (the
kernel) and, at inference of a JIT engine, torch.
"""

# No `from __future__ import annotations`: tensorrt.plugin checks the decorated functions'
# annotations with issubclass, so they must be classes, not strings.

import re
from dataclasses import dataclass
from typing import Any

import torch

from defr.choices import ENGINE_PRECISIONS
from defr.errors import DefrError
from defr.kernels.spec import PairOp, box_scale_bits
from defr.kernels.triton_pair_attention import (
    KernelConfig,
    interpreted,
    kernel_config,
    kernel_signature,
    launch,
    pair_attention_kernel,
)
from defr.optional import TENSORRT_WORDS, import_tensorrt, import_triton

PLUGIN_NAMESPACE = "defr"
PLUGIN_NAME = "PairMaskedAttention"
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PLUGIN_NAME}"
MIN_QDP = (10, 6)  # tensorrt.plugin: register / impl
MIN_AOT = (10, 9)  # tensorrt.plugin.aot_impl
MIN_DOMAIN_NAMESPACE = (10, 10)  # the ONNX parser takes the plugin namespace from the node's domain
PLUGIN_DTYPES = ENGINE_PRECISIONS  # the ONNX node's type constraint T: an engine's precision
PLUGIN_ATTRIBUTES = ("grid_size", "heads", "image_size", "mask_mode")
_REGISTERED: set[str] = set()  # parts registered with TensorRT in this process: "jit", "aot"


class TensorRTPluginError(DefrError, RuntimeError):
    """TensorRT is missing or too old for the plugin, or the kernel cannot be built as an AOT plugin."""


def parse_version(text: str) -> tuple[int, ...]:
    """``"10.9.0.34"`` → (10, 9, 0, 34); parts after the first non-numeric one are dropped."""
    parts = []
    for part in text.split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        parts.append(int(digits.group()))
        if digits.group() != part:
            break
    if len(parts) < 2:
        raise TensorRTPluginError(f"cannot read the TensorRT version {text!r} (expected MAJOR.MINOR...)")
    return tuple(parts)


def check_version(version: str, minimum: tuple[int, int], feature: str) -> None:
    """``TensorRTPluginError`` (one line) unless TensorRT ``version`` >= ``minimum`` for ``feature``."""
    if parse_version(version)[:2] < minimum:
        need = ".".join(map(str, minimum))
        raise TensorRTPluginError(
            f"{feature} needs TensorRT >= {need}, found {version}: pip install 'tensorrt>={need}'"
        )


def import_tensorrt_plugin(aot: bool) -> tuple[Any, Any]:
    """(tensorrt, tensorrt.plugin), checked new enough for QDP plugins (and AOT ones if ``aot``)."""
    tensorrt = import_tensorrt(f"the defr::PairMaskedAttention plugin ({TENSORRT_WORDS}; >= 10.9 for AOT)")
    check_version(tensorrt.__version__, MIN_QDP, "the defr::PairMaskedAttention plugin (tensorrt.plugin)")
    if aot:
        check_version(tensorrt.__version__, MIN_AOT, "an AOT plugin (tensorrt.plugin.aot_impl)")
    import tensorrt.plugin as trtp

    return tensorrt, trtp


def check_onnx_node(version: str, attributes: dict) -> None:
    """``TensorRTPluginError`` (one line) unless TensorRT ``version`` can build a ``PairMaskedAttention``
    node with these ``attributes`` into an engine with this plugin."""
    missing = [a for a in PLUGIN_ATTRIBUTES if a not in attributes]
    if missing:
        raise TensorRTPluginError(f"the PairMaskedAttention node lacks the attribute(s) {missing}")
    mask_mode = attributes["mask_mode"]
    mask_mode = mask_mode.decode() if isinstance(mask_mode, bytes) else mask_mode
    PairOp(attributes["heads"], attributes["grid_size"], attributes["image_size"], mask_mode)
    check_version(version, MIN_QDP, "the defr::PairMaskedAttention plugin (tensorrt.plugin)")
    if attributes.get("aot"):
        check_version(version, MIN_AOT, "an AOT plugin node (aot=1)")
    if "plugin_namespace" not in attributes:
        check_version(
            version, MIN_DOMAIN_NAMESPACE, "a plugin node without plugin_namespace (namespace from the domain)"
        )


@dataclass(frozen=True)
class AotLaunch:
    """How TensorRT launches the AOT kernel: constexprs, argument types, grid, threads, scalars."""

    config: KernelConfig
    signature: dict[str, str]
    grid: tuple[Any, int, int]  # (P, heads, 1); P an int or a TensorRT shape expression
    block_x: int
    extra_args: tuple[int, ...]  # the int32 scalars, in kernel order


def aot_launch(dtype: str, dim: int, pairs: Any, op: PairOp) -> AotLaunch:
    """Launch parameters of the AOT kernel: q_cls [B, D], k, v [B, 1 + G², D], out [P, D], all in
    TensorRT's linear (row-major) layout. dtype: ``fp32`` or ``fp16``; dim: D (static: it fixes the
    constexprs); pairs: P; op: the node's attributes."""
    heads, grid_size = op.heads, op.grid_size
    if dtype not in PLUGIN_DTYPES:
        raise TensorRTPluginError(f"the plugin runs float32 or float16 attention, not {dtype}")
    if dim % heads:
        raise TensorRTPluginError(f"D = {dim} (q_cls.shape[1]) is not divisible by heads {heads}")
    cfg = kernel_config(dim, op)
    seq_dim = (1 + grid_size * grid_size) * dim
    # q_cls [B, D]: strides (D, 1); k and v [B, L, D]: (L·D, D, 1); then G and the box scale.
    extra = (dim, 1, seq_dim, dim, 1, seq_dim, dim, 1, grid_size, box_scale_bits(op))
    return AotLaunch(cfg, kernel_signature(dtype), (pairs, heads, 1), cfg.num_warps * 32, extra)


def compile_aot(launch: AotLaunch, target: Any = None) -> tuple[str, str, int]:
    """Compile the kernel for ``launch`` → (kernel name, PTX, shared memory bytes).

    target: a ``triton.backends.compiler.GPUTarget``; None is the current GPU's.
    """
    triton = import_triton("AOT compilation of the plugin kernel")
    if interpreted():
        raise TensorRTPluginError(
            "AOT compilation needs Triton's compiler: unset TRITON_INTERPRET (set when triton was imported)"
        )
    src = triton.compiler.ASTSource(
        fn=pair_attention_kernel, signature=launch.signature, constexprs=launch.config.constexprs()
    )
    compiled = triton.compile(src, target=target, options={"num_warps": launch.config.num_warps})
    meta = compiled.metadata
    scratch = {k: getattr(meta, k, 0) for k in ("global_scratch_size", "profile_scratch_size")}
    if any(scratch.values()):
        raise TensorRTPluginError(
            f"the compiled kernel needs Triton scratch memory {scratch}, which AOT plugins do not get"
        )
    return meta.name, compiled.asm["ptx"], meta.shared


def register_plugin(aot: bool = True) -> None:
    """Register ``defr::PairMaskedAttention`` with TensorRT (JIT impl, and the AOT impl if ``aot``).

    Call before building or deserializing an engine that uses the plugin (an AOT engine does not
    need it at inference). Idempotent. Raises ``TensorRTPluginError`` without TensorRT >= 10.6
    (10.9 with ``aot``).
    """
    trt, trtp = import_tensorrt_plugin(aot)
    if "jit" not in _REGISTERED:
        _register_jit(trtp)
        _REGISTERED.add("jit")
    if aot and "aot" not in _REGISTERED:
        _register_aot(trt, trtp)
        _REGISTERED.add("aot")


def _register_jit(trtp) -> None:
    """The plugin's description and its JIT implementation."""

    @trtp.register(PLUGIN_ID)
    def describe(
        q_cls: trtp.TensorDesc,
        k: trtp.TensorDesc,
        v: trtp.TensorDesc,
        boxes_h: trtp.TensorDesc,
        boxes_o: trtp.TensorDesc,
        pair_index: trtp.TensorDesc,
        grid_size: int,
        heads: int,
        image_size: int,
        mask_mode: str,
    ) -> trtp.TensorDesc:
        PairOp(heads, grid_size, image_size, mask_mode)  # validates the attributes
        return trtp.from_shape_expr((boxes_h.shape_expr[0], q_cls.shape_expr[1]), dtype=q_cls.dtype)

    @trtp.impl(PLUGIN_ID)
    def run_jit(q_cls, k, v, boxes_h, boxes_o, pair_index, grid_size, heads, image_size, mask_mode, outputs, stream):
        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            inputs = [torch.as_tensor(t, device="cuda") for t in (q_cls, k, v, boxes_h, boxes_o, pair_index)]
            out = torch.as_tensor(outputs[0], device="cuda")
            launch(*inputs, out, PairOp(heads, grid_size, image_size, mask_mode))


def _register_aot(trt, trtp) -> None:
    """The plugin's AOT implementation (``_register_jit`` first: it registers the description)."""
    dtype_names = {trt.float32: "fp32", trt.float16: "fp16"}

    @trtp.aot_impl(PLUGIN_ID)
    def run_aot(
        q_cls, k, v, boxes_h, boxes_o, pair_index, grid_size, heads, image_size, mask_mode, outputs, tactic
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        if q_cls.dtype not in dtype_names:
            raise TensorRTPluginError(f"the plugin runs float32 or float16 attention, not {q_cls.dtype}")
        dim, seq = q_cls.shape_expr[1], k.shape_expr[1]
        if not dim.is_constant:
            raise TensorRTPluginError("the AOT plugin needs a static D (q_cls.shape[1]): it is a kernel constant")
        if seq.is_constant and seq.constant_value() != 1 + grid_size * grid_size:
            raise TensorRTPluginError(f"k has L = {seq.constant_value()} keys, grid_size {grid_size} needs 1 + G²")
        op = PairOp(heads, grid_size, image_size, mask_mode)
        plan = aot_launch(dtype_names[q_cls.dtype], dim.constant_value(), boxes_h.shape_expr[0], op)
        name, ptx, shared = compile_aot(plan)
        params = trtp.KernelLaunchParams()
        params.grid_x, params.grid_y, params.grid_z = plan.grid
        params.block_x = plan.block_x
        params.shared_mem = shared
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(x) for x in plan.extra_args])
        return name, ptx, params, extra
