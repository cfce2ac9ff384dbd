"""defr.kernels: the Triton kernel (through Triton's CPU interpreter), the grouped path and the custom op
against the slow reference; the TensorRT plugin's pure-Python parts (no TensorRT, no GPU here)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

# Triton picks its compiler or its interpreter once, when it is first imported. Without a GPU only the
# interpreter can run the kernel, so ask for it before this process imports triton. In a whole-suite run
# something may have imported it already (torch._dynamo does): the kernel tests then run in a child
# process, test_kernel_tests_in_a_child_process.
if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")

from defr.choices import MASK_MODES  # noqa: E402
from defr.errors import ConfigError  # noqa: E402
from defr.kernels import (  # noqa: E402
    ATTENTION_BACKENDS,
    PairOp,
    pair_attention_grouped,
    pair_attention_reference,
    pair_masked_attention,
)
from defr.optional import MissingDependency  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HAS_TRITON = importlib.util.find_spec("triton") is not None
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CHILD = "DEFR_KERNEL_TESTS_CHILD"  # set in the child process that runs only the kernel tests
# Relative to the largest reference output: both sides compute in float32 and round once at the end.
TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
OP_KW = dict(heads=2, grid_size=4, image_size=32)  # small inputs of the op tests: G = 4, S = 32, D = 16
OP = PairOp(**OP_KW)


def _kernel_runs_here() -> bool:
    if not HAS_TRITON:
        return False
    from defr.kernels.triton_pair_attention import interpreted

    return torch.cuda.is_available() or interpreted()


KERNEL_RUNS = _kernel_runs_here()


@pytest.fixture
def kernel():
    """Tests that run the Triton kernel: on CUDA, else through Triton's interpreter."""
    if not HAS_TRITON:
        pytest.skip("needs triton")
    if not KERNEL_RUNS:
        if os.environ.get(CHILD):
            pytest.fail("TRITON_INTERPRET=1 did not reach triton in the child process")
        pytest.skip("triton was imported without its interpreter here: test_kernel_tests_in_a_child_process runs this")


@pytest.fixture(autouse=True)
def _child_runs_kernel_tests_only(request):
    if os.environ.get(CHILD) and "kernel" not in request.fixturenames:
        pytest.skip("run by the parent process")


def _qkv(batch: int, grid: int, dim: int, dtype=torch.float32, seed: int = 0, device: str = "cpu"):
    """q_cls [B, D], k, v [B, L, D]: all three strided views of one fused [B, L, 3D] qkv tensor."""
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, 1 + grid * grid, 3 * dim, generator=gen).to(device, dtype)
    return qkv[:, 0, :dim], qkv[:, :, dim : 2 * dim], qkv[:, :, 2 * dim :]


def _random_boxes(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """[n, 4] boxes, some partly outside the image (negative coords, beyond the border)."""
    xy = torch.rand(n, 2, generator=gen) * size * 1.2 - 0.1 * size
    wh = torch.rand(n, 2, generator=gen) * size * 0.7
    return torch.cat([xy, xy + wh], dim=1)


def _edge_pairs(size: int, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(human, object) edge cases in pixels of the S×S input; the first five cover no patch at all."""
    s, step = float(size), size / grid
    pairs = [
        ([2 * step, 2 * step, 2 * step, 2 * step], [-30.0, 5.0, -2.0, 30.0]),  # zero-size on a border; left of it
        ([s + 2, 5.0, s + 30, 30.0], [5.0, -40.0, 30.0, -1.0]),  # right of the image; above it
        ([5.0, s + 1, 30.0, s + 50], [-50.0, -40.0, -10.0, -5.0]),  # below; negative coords
        ([30.0, 30.0, 10.0, 10.0], [step, 0.0, step, s]),  # inverted box; zero-width column
        ([-9.0, s + 3, -1.0, s + 9], [s + 1, -9.0, s + 9, -1.0]),  # outside corners
        ([0.0, 0.0, s, s], [3.0, 4.0, 20.0, 30.0]),  # whole image
        ([-10.0, -10.0, s + 10, s + 10], [0.0, 0.0, 0.5, 0.5]),  # beyond the image; sub-pixel corner
        ([step, 2 * step, 3 * step, 5 * step], [2 * step, 0.0, 4 * step, 3 * step]),  # on patch borders, overlapping
        ([3.0, 4.0, 20.0, 30.0], [3.0, 4.0, 20.0, 30.0]),  # identical boxes
        ([5.0, 5.0, s - 5, s - 5], [10.0, 12.0, 20.0, 22.0]),  # object inside the human
        ([-10.0, s / 2, s / 3, s + 20], [s - 9, -20.0, s + 30, s / 2 + 1]),  # partly outside, two sides
        ([5.0, 7.0, 5.0, 7.0], [s - 0.5, s - 0.5, s, s]),  # zero-size inside a patch (sees it); corner
    ]
    h, o = zip(*pairs, strict=True)
    return torch.tensor(h), torch.tensor(o)


def _pairs(batch: int, size: int, grid: int, randoms: int, seed: int = 0, device: str = "cpu"):
    """Random pairs then the edge pairs, over ``batch`` images in a shuffled (unsorted) order."""
    gen = torch.Generator().manual_seed(seed)
    eh, eo = _edge_pairs(size, grid)
    boxes_h = torch.cat([_random_boxes(randoms, size, gen), eh])
    boxes_o = torch.cat([_random_boxes(randoms, size, gen), eo])
    pair_index = torch.randint(0, batch, (boxes_h.shape[0],), generator=gen)
    return boxes_h.to(device), boxes_o.to(device), pair_index.to(device)


def _rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert torch.isfinite(out).all()
    return ((out.float() - ref.float()).abs().max() / ref.float().abs().max()).item()


def _triton(*args):
    return pair_masked_attention(*args, backend="triton")


# --- the Triton kernel vs the reference (on CPU through Triton's interpreter) --------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mask_mode", MASK_MODES)
def test_triton_matches_reference(kernel, mask_mode, dtype):
    """Random and edge boxes over three images, unsorted pair_index, q, k and v views of a fused qkv.

    bfloat16 runs as such: Triton's interpreter stores it as uint16 and widens it to float32 exactly."""
    grid, size, dim, heads = 6, 48, 32, 4
    q, k, v = _qkv(3, grid, dim, dtype, device=DEVICE)
    boxes_h, boxes_o, pair_index = _pairs(3, size, grid, randoms=6, device=DEVICE)
    op = PairOp(heads=heads, grid_size=grid, image_size=size, mask_mode=mask_mode)
    ref = pair_attention_reference(q, k, v, boxes_h, boxes_o, pair_index, op)
    assert _rel_error(_triton(q, k, v, boxes_h, boxes_o, pair_index, op), ref) <= TOL[dtype]


def test_triton_pairs_that_see_nothing_get_cls_value(kernel):
    """Boxes covering no patch: softmax over CLS alone, so the output is exactly v[b, 0] (no NaN)."""
    grid, size = 6, 48
    q, k, v = _qkv(2, grid, 32, device=DEVICE)
    eh, eo = _edge_pairs(size, grid)
    boxes_h, boxes_o, pair_index = eh[:5].to(DEVICE), eo[:5].to(DEVICE), torch.tensor([1, 0, 1, 1, 0], device=DEVICE)
    op = PairOp(heads=2, grid_size=grid, image_size=size)
    for out in (
        _triton(q, k, v, boxes_h, boxes_o, pair_index, op),
        pair_attention_grouped(q, k, v, boxes_h, boxes_o, pair_index, op),
        pair_attention_reference(q, k, v, boxes_h, boxes_o, pair_index, op),
    ):
        assert torch.equal(out, v[pair_index, 0])


@pytest.mark.parametrize("mask_mode", MASK_MODES)
def test_triton_patch_rule_is_float32_exact(kernel, mask_mode):
    """G/S = 0.1 is not a float32: edges on patch borders (x = k·S/G) and one ulp off them must fall on the
    same side as PyTorch's float32 ``box · (G/S)`` (a float64 product would differ, e.g. ceil(30·0.1) = 4)."""
    grid, size, step = 7, 70, 10.0
    q, k, v = _qkv(1, grid, 16, seed=1, device=DEVICE)
    edges = torch.arange(grid + 1, dtype=torch.float32) * step
    near = torch.cat([edges, torch.nextafter(edges, edges + 1), torch.nextafter(edges, edges - 1)])
    gen = torch.Generator().manual_seed(5)
    corners = near[torch.randint(0, near.numel(), (24, 4), generator=gen)]
    boxes_h = torch.cat([corners[:, :2].minimum(corners[:, 2:]), corners[:, :2].maximum(corners[:, 2:])], dim=1)
    boxes_h, boxes_o = boxes_h.to(DEVICE), boxes_h.roll(1, dims=0).to(DEVICE)
    pair_index = torch.zeros(24, dtype=torch.long, device=DEVICE)
    op = PairOp(heads=2, grid_size=grid, image_size=size, mask_mode=mask_mode)
    ref = pair_attention_reference(q, k, v, boxes_h, boxes_o, pair_index, op)
    assert _rel_error(_triton(q, k, v, boxes_h, boxes_o, pair_index, op), ref) <= 1e-5


def test_triton_one_pair_and_many_pairs_on_one_image(kernel):
    grid, size = 8, 64
    q, k, v = _qkv(1, grid, 64, seed=2, device=DEVICE)
    gen = torch.Generator().manual_seed(2)
    boxes_h, boxes_o = _random_boxes(40, size, gen).to(DEVICE), _random_boxes(40, size, gen).to(DEVICE)
    pair_index = torch.zeros(40, dtype=torch.long, device=DEVICE)
    op = PairOp(heads=4, grid_size=grid, image_size=size)
    ref = pair_attention_reference(q, k, v, boxes_h, boxes_o, pair_index, op)
    assert _rel_error(_triton(q, k, v, boxes_h, boxes_o, pair_index, op), ref) <= 1e-5
    one = _triton(q, k, v, boxes_h[:1], boxes_o[:1], pair_index[:1], op)
    assert _rel_error(one, ref[:1]) <= 1e-5


def test_triton_takes_any_strides(kernel):
    """k stored [B, D, L] and transposed (its stride along D is L), q and v contiguous."""
    grid, size, dim = 4, 32, 32
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, dim, generator=gen).to(DEVICE)
    k = torch.randn(2, dim, 1 + grid * grid, generator=gen).to(DEVICE).transpose(1, 2)
    v = torch.randn(2, 1 + grid * grid, dim, generator=gen).to(DEVICE)
    boxes_h, boxes_o, pair_index = _pairs(2, size, grid, randoms=3, seed=3, device=DEVICE)
    op = PairOp(heads=2, grid_size=grid, image_size=size, mask_mode="released")
    ref = pair_attention_reference(q, k, v, boxes_h, boxes_o, pair_index, op)
    assert _rel_error(_triton(q, k, v, boxes_h, boxes_o, pair_index, op), ref) <= 1e-5


def test_every_backend_agrees(kernel):
    q, k, v = _qkv(2, 4, 16, device=DEVICE)
    boxes_h, boxes_o, pair_index = _pairs(2, 32, 4, randoms=3, device=DEVICE)
    ref = pair_attention_reference(q, k, v, boxes_h, boxes_o, pair_index, OP)
    for backend in ATTENTION_BACKENDS:
        out = pair_masked_attention(q, k, v, boxes_h, boxes_o, pair_index, OP, backend=backend)
        assert _rel_error(out, ref) <= 1e-5, backend


def test_triton_zero_pairs(kernel):
    q, k, v = _qkv(2, 4, 16, device=DEVICE)
    empty = torch.zeros(0, 4, device=DEVICE)
    out = _triton(q, k, v, empty, empty, torch.zeros(0, dtype=torch.long, device=DEVICE), OP)
    assert out.shape == (0, 16) and out.dtype == q.dtype


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    """A compiled (not interpreted) kernel refuses CPU tensors with the way out in the message."""
    import triton

    from defr.kernels import triton_pair_attention

    compiled = triton.runtime.JITFunction(triton_pair_attention.pair_attention_kernel.fn)
    monkeypatch.setattr(triton_pair_attention, "pair_attention_kernel", compiled)
    q, k, v = _qkv(1, 4, 16)
    boxes = torch.zeros(1, 4)
    with pytest.raises(ConfigError, match="set TRITON_INTERPRET=1 before triton is first imported"):
        _triton(q, k, v, boxes, boxes, torch.zeros(1, dtype=torch.long), OP)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TRITON or KERNEL_RUNS, reason="the kernel tests run in this process")
def test_kernel_tests_in_a_child_process():
    """triton was imported here before TRITON_INTERPRET=1 could be set: run this file's kernel tests in a
    fresh process that sets it first."""
    env = {**os.environ, "TRITON_INTERPRET": "1", CHILD: "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-W", "ignore"]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert int(re.search(r"(\d+) passed", result.stdout).group(1)) >= 15, result.stdout[-2000:]


@pytest.mark.parametrize("mask_mode", MASK_MODES)
def test_forward_pairs_with_the_kernel_matches_the_dense_reference(kernel, mask_mode):
    """The model's pair path with attention="triton" against forward_pairs_dense (the released computation)."""
    from defr.model import create_model

    model = create_model("tiny-vit", 64).to(DEVICE)
    gen = torch.Generator().manual_seed(3)
    images = torch.randn(3, 3, 64, 64, generator=gen).to(DEVICE)
    boxes_h, boxes_o = _random_boxes(9, 64, gen).to(DEVICE), _random_boxes(9, 64, gen).to(DEVICE)
    pair_index = torch.tensor([2, 0, 2, 2, 0, 1, 0, 2, 1], device=DEVICE)
    with torch.no_grad():
        fast, image = model.forward_pairs(
            images, boxes_h, boxes_o, pair_index, with_image_logits=True, mask_mode=mask_mode, attention="triton"
        )
        dense = model.forward_pairs_dense(images, boxes_h, boxes_o, pair_index, mask_mode=mask_mode)
        full = model(images)
    assert (fast - dense).abs().max() <= 1e-4 and (image - full).abs().max() <= 1e-4


# --- the grouped PyTorch path vs the reference ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mask_mode", MASK_MODES)
def test_grouped_matches_reference(mask_mode, dtype):
    """Four images, one without pairs, unsorted pair_index, random and edge boxes."""
    grid, size, dim, heads = 7, 56, 48, 3
    q, k, v = _qkv(4, grid, dim, dtype, seed=4)
    boxes_h, boxes_o, pair_index = _pairs(4, size, grid, randoms=20, seed=4)
    pair_index[pair_index == 2] = 3
    op = PairOp(heads=heads, grid_size=grid, image_size=size, mask_mode=mask_mode)
    ref = pair_attention_reference(q, k, v, boxes_h, boxes_o, pair_index, op)
    assert _rel_error(pair_attention_grouped(q, k, v, boxes_h, boxes_o, pair_index, op), ref) <= TOL[dtype]


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_zero_pairs_give_empty_output(backend):
    q, k, v = _qkv(2, 4, 16)
    empty = torch.zeros(0, 4)
    out = pair_masked_attention(q, k, v, empty, empty, torch.zeros(0, dtype=torch.long), OP, backend=backend)
    assert out.shape == (0, 16) and out.dtype == q.dtype


def test_released_mode_masks_nothing():
    """released: a pair that sees no patch still attends to every patch (+1 outside, no −inf)."""
    q, k, v = _qkv(1, 4, 16)
    boxes = torch.tensor([[-9.0, -9.0, -1.0, -1.0]])
    index = torch.zeros(1, dtype=torch.long)
    hard = pair_masked_attention(q, k, v, boxes, boxes, index, PairOp(**OP_KW, mask_mode="hard"))
    released = pair_masked_attention(q, k, v, boxes, boxes, index, PairOp(**OP_KW, mask_mode="released"))
    assert torch.equal(hard[0], v[0, 0]) and not torch.allclose(released[0], v[0, 0])


# --- the custom op: eager, fake kernel, torch.compile, torch.export ----------------------------------------------


def _op_inputs(pairs: int = 5, seed: int = 0):
    q, k, v = (t.contiguous() for t in _qkv(2, 4, 16, seed=seed))
    gen = torch.Generator().manual_seed(seed)
    boxes_h, boxes_o = _random_boxes(pairs, 32, gen), _random_boxes(pairs, 32, gen)
    return q, k, v, boxes_h, boxes_o, torch.randint(0, 2, (pairs,), generator=gen)


class _PairHead(torch.nn.Module):
    """The op between two ordinary ops, as a model would use it."""

    def forward(self, q, k, v, boxes_h, boxes_o, pair_index):
        return pair_masked_attention(q * 2, k, v, boxes_h, boxes_o, pair_index, OP).relu()


def _head_reference(q, k, v, boxes_h, boxes_o, pair_index):
    return pair_attention_reference(q * 2, k, v, boxes_h, boxes_o, pair_index, OP).relu()


def test_op_is_registered_and_passes_opcheck():
    args = _op_inputs()
    op = torch.ops.defr.pair_masked_attention.default
    torch.library.opcheck(op, (*args, 2, 4, 32, "hard"))
    out = op(*args, 2, 4, 32, "released")
    assert _rel_error(out, pair_attention_reference(*args, PairOp(**OP_KW, mask_mode="released"))) <= 1e-5


def test_op_fake_kernel_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        args = [mode.from_tensor(t) for t in _op_inputs(pairs=7)]
        args[0], args[1], args[2] = args[0].half(), args[1].half(), args[2].half()
        out = torch.ops.defr.pair_masked_attention(*args, 2, 4, 32, "hard")
        assert out.shape == (7, 16) and out.dtype == torch.float16
        with pytest.raises(ConfigError, match=r"boxes_o must be \[P, 4\]"):
            torch.ops.defr.pair_masked_attention(*args[:4], args[4][:3], args[5], 2, 4, 32, "hard")


def test_op_under_torch_compile_fullgraph():
    """Dynamo traces the whole module into one graph (fullgraph=True), P dynamic; AOT autograd's eager
    backend keeps it quick (the inductor variant is ``test_op_under_torch_compile_inductor``)."""
    compiled = torch.compile(_PairHead(), fullgraph=True, backend="aot_eager", dynamic=True)
    for pairs in (5, 9):
        args = _op_inputs(pairs, seed=pairs)
        assert _rel_error(compiled(*args), _head_reference(*args)) <= 1e-5


@pytest.mark.slow
def test_op_under_torch_compile_inductor():
    compiled = torch.compile(_PairHead(), fullgraph=True)
    args = _op_inputs()
    assert _rel_error(compiled(*args), _head_reference(*args)) <= 1e-5


def test_op_exports_with_dynamic_pairs():
    pairs = torch.export.Dim("P", min=1, max=4096)
    dynamic = ({}, {}, {}, {0: pairs}, {0: pairs}, {0: pairs})
    program = torch.export.export(_PairHead(), _op_inputs(5), dynamic_shapes=dynamic)
    targets = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert torch.ops.defr.pair_masked_attention.default in targets
    for p in (1, 11):
        args = _op_inputs(p, seed=p)
        assert _rel_error(program.module()(*args), _head_reference(*args)) <= 1e-5


# --- argument errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(backend="cuda"), "backend must be one of"),
        (dict(mask_mode="soft"), "mask_mode must be one of"),
        (dict(heads=3), "not divisible by heads 3"),
        (dict(image_size=30), "multiple of grid_size"),
        (dict(k=torch.zeros(2, 9, 16)), r"k must be \[B, 1 \+ G², D\] = \[2, 17, 16\].*not \(2, 9, 16\)"),
        (dict(v=torch.zeros(2, 17, 16, dtype=torch.float64)), "v must be float32, float16 or bfloat16"),
        (dict(boxes_h=torch.zeros(4, 4)), r"boxes_h must be \[P, 4\] = \[5, 4\].*not \(4, 4\)"),
        (dict(boxes_o=torch.zeros(5, 4).double()), "boxes_o must be float32"),
        (dict(pair_index=torch.zeros(5, dtype=torch.int32)), "pair_index must be int64"),
        (dict(pair_index=torch.tensor([0, 1, 2, 0, 1])), r"pair_index values must lie in \[0, 2\)"),
    ],
)
@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_bad_arguments_raise_config_error(change, message, backend):
    q, k, v, boxes_h, boxes_o, pair_index = _op_inputs()
    args = dict(q_cls=q, k=k, v=v, boxes_h=boxes_h, boxes_o=boxes_o, pair_index=pair_index, backend=backend)
    attributes = OP_KW | {key: value for key, value in change.items() if key in ("heads", "image_size", "mask_mode")}
    args |= {key: value for key, value in change.items() if key not in attributes}
    with pytest.raises(ConfigError, match=message):
        pair_masked_attention(**args, op=PairOp(**attributes))


# --- the TensorRT plugin without TensorRT ------------------------------------------------------------------------


@pytest.fixture
def trt_plugin():
    pytest.importorskip("triton")
    from defr.kernels import tensorrt_plugin

    return tensorrt_plugin


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("10.9.0.34", (10, 9, 0, 34)), ("10.10.0", (10, 10, 0)), ("10.6.0.post1", (10, 6, 0)), ("11.0", (11, 0))],
)
def test_plugin_parses_tensorrt_versions(trt_plugin, text, parsed):
    assert trt_plugin.parse_version(text) == parsed


def test_plugin_version_checks(trt_plugin):
    trt_plugin.check_version("10.10.0.31", trt_plugin.MIN_DOMAIN_NAMESPACE, "x")
    trt_plugin.check_version("11.0.0", trt_plugin.MIN_AOT, "x")
    with pytest.raises(trt_plugin.TensorRTPluginError, match=r"^an AOT plugin needs TensorRT >= 10\.9, found 10\.8\.0"):
        trt_plugin.check_version("10.8.0", trt_plugin.MIN_AOT, "an AOT plugin")
    with pytest.raises(trt_plugin.TensorRTPluginError, match="cannot read the TensorRT version"):
        trt_plugin.parse_version("ten")
    assert (trt_plugin.MIN_QDP, trt_plugin.MIN_AOT, trt_plugin.MIN_DOMAIN_NAMESPACE) == ((10, 6), (10, 9), (10, 10))


def test_plugin_without_tensorrt_says_how_to_install(trt_plugin, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt raises ImportError
    with pytest.raises(MissingDependency, match=r"defr::PairMaskedAttention plugin .* 'tensorrt' .*pip install"):
        trt_plugin.register_plugin()


@pytest.mark.parametrize(("version", "aot", "needs"), [("10.5.1", False, "10.6"), ("10.8.0.43", True, "10.9")])
def test_plugin_refuses_old_tensorrt(trt_plugin, monkeypatch, version, aot, needs):
    monkeypatch.setitem(sys.modules, "tensorrt", SimpleNamespace(__version__=version))
    with pytest.raises(trt_plugin.TensorRTPluginError, match=f"needs TensorRT >= {re.escape(needs)}, found {version}"):
        trt_plugin.register_plugin(aot=aot)


def test_plugin_checks_an_onnx_node_against_the_tensorrt_version(trt_plugin):
    from defr.export.plugin_node import node_attributes

    attrs = node_attributes(PairOp(heads=12, grid_size=14, image_size=224, mask_mode="hard"))
    trt_plugin.check_onnx_node("10.9.0.34", attrs)
    with pytest.raises(trt_plugin.TensorRTPluginError, match=r"AOT plugin node \(aot=1\) needs TensorRT >= 10\.9"):
        trt_plugin.check_onnx_node("10.8.0", attrs)
    trt_plugin.check_onnx_node("10.8.0", attrs | {"aot": 0})
    no_namespace = {k: v for k, v in attrs.items() if k != "plugin_namespace"}
    trt_plugin.check_onnx_node("10.10.0", no_namespace)
    with pytest.raises(trt_plugin.TensorRTPluginError, match=r"without plugin_namespace .* needs TensorRT >= 10\.10"):
        trt_plugin.check_onnx_node("10.9.0", no_namespace)
    with pytest.raises(trt_plugin.TensorRTPluginError, match=r"needs TensorRT >= 10\.6, found 10\.5"):
        trt_plugin.check_onnx_node("10.5", attrs | {"aot": 0})
    with pytest.raises(trt_plugin.TensorRTPluginError, match=r"lacks the attribute\(s\) \['mask_mode'\]"):
        trt_plugin.check_onnx_node("10.10.0", {"grid_size": 14, "heads": 12, "image_size": 224})
    with pytest.raises(ConfigError, match="mask_mode"):
        trt_plugin.check_onnx_node("10.10.0", attrs | {"mask_mode": b"soft"})  # ONNX strings come back as bytes
    with pytest.raises(ConfigError, match="image_size 200 must be a positive multiple of grid_size 14"):
        trt_plugin.check_onnx_node("10.10.0", attrs | {"image_size": 200})


def test_plugin_aot_launch_parameters(trt_plugin):
    """ViT-B/16 at 672 px: grid (P, 12), 64-dim heads as constexprs, strides of row-major tensors."""
    from defr.kernels.triton_pair_attention import SCALAR_ARGS, pair_attention_kernel

    plan = trt_plugin.aot_launch("fp16", 768, "P", PairOp(grid_size=42, heads=12, image_size=672, mask_mode="hard"))
    assert plan.grid == ("P", 12, 1) and plan.block_x == 32 * plan.config.num_warps
    assert plan.config.constexprs() == {
        "HEADS": 12,
        "HEAD_DIM": 64,
        "MASKED": True,
        "SM_SCALE": 0.125,
        "BLOCK_N": 64,
        "BLOCK_D": 64,
    }
    # Inputs, int32 scalars, output: the order TensorRT passes them, and the kernel's own order.
    assert list(plan.signature) == pair_attention_kernel.arg_names
    runtime = [n for n, t in plan.signature.items() if t != "constexpr"]
    assert runtime == [
        "q_ptr",
        "k_ptr",
        "v_ptr",
        "boxes_h_ptr",
        "boxes_o_ptr",
        "pair_index_ptr",
        *SCALAR_ARGS,
        "out_ptr",
    ]
    assert [plan.signature[n] for n in ("q_ptr", "boxes_h_ptr", "pair_index_ptr", "out_ptr")] == [
        "*fp16",
        "*fp32",
        "*i64",
        "*fp16",
    ]
    seq = 1 + 42 * 42
    strides = (*torch.empty(1, 768).stride(), *torch.empty(1, seq, 768).stride(), *torch.empty(1, seq, 768).stride())
    assert plan.extra_args[:8] == strides and plan.extra_args[8] == 42
    assert struct.unpack("<f", struct.pack("<i", plan.extra_args[9]))[0] == torch.tensor(42 / 672).item()
    released_op = PairOp(grid_size=42, heads=12, image_size=672, mask_mode="released")
    released = trt_plugin.aot_launch("fp32", 768, 3, released_op)
    assert released.config.constexprs()["MASKED"] is False and released.signature["k_ptr"] == "*fp32"
    with pytest.raises(trt_plugin.TensorRTPluginError, match="float32 or float16"):
        trt_plugin.aot_launch("bf16", 768, 3, PairOp(grid_size=42, heads=12, image_size=672, mask_mode="hard"))
    with pytest.raises(trt_plugin.TensorRTPluginError, match="not divisible by heads"):
        trt_plugin.aot_launch("fp32", 770, 3, PairOp(grid_size=42, heads=12, image_size=672, mask_mode="hard"))


@pytest.mark.parametrize("mask_mode", MASK_MODES)
def test_plugin_aot_arguments_compute_the_op(trt_plugin, kernel, mask_mode):
    """The kernel launched as TensorRT's AOT plugin launches it (row-major buffers, the plan's int32 scalars
    and constexprs, grid (P, heads)) equals the reference."""
    from defr.kernels.triton_pair_attention import pair_attention_kernel

    grid, size, dim, heads = 6, 48, 32, 4
    q, k, v = (t.contiguous() for t in _qkv(2, grid, dim, seed=6, device=DEVICE))
    boxes_h, boxes_o, pair_index = _pairs(2, size, grid, randoms=4, seed=6, device=DEVICE)
    p = pair_index.shape[0]
    op = PairOp(grid_size=grid, heads=heads, image_size=size, mask_mode=mask_mode)
    plan = trt_plugin.aot_launch("fp32", dim, p, op)
    out = torch.empty(p, dim, device=DEVICE)
    pair_attention_kernel[plan.grid](
        q, k, v, boxes_h, boxes_o, pair_index, *plan.extra_args, out, **plan.config.constexprs()
    )
    ref = pair_attention_reference(q, k, v, boxes_h, boxes_o, pair_index, op)
    assert _rel_error(out, ref) <= 1e-5


_COMPILE_PTX = r"""
import json, re
from triton.backends.compiler import GPUTarget
from defr.kernels import PairOp, tensorrt_plugin as plugin
plan = plugin.aot_launch("fp16", 768, 1, PairOp(grid_size=42, heads=12, image_size=672, mask_mode="hard"))
name, ptx, shared = plugin.compile_aot(plan, target=GPUTarget("cuda", 90, 32))
params = re.search(r"\.entry\s+" + name + r"\((.*?)\)", ptx, re.S).group(1)
print(json.dumps({"params": re.findall(r"\.param\s+\.(u64|u32)", params), "shared": shared}))
"""


@pytest.mark.slow
def test_plugin_aot_kernel_compiles_to_ptx_for_hopper(trt_plugin):
    """Triton compiles the AOT kernel for sm_90 without a GPU (in a fresh process: this one may run Triton's
    interpreter). The PTX entry takes 6 input pointers, 10 int32 scalars and the output pointer, then Triton's
    two scratch pointers, unused (size 0: TensorRT passes null for them)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", _COMPILE_PTX], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    compiled = json.loads(result.stdout.strip().splitlines()[-1])
    assert compiled["params"] == ["u64"] * 6 + ["u32"] * 10 + ["u64"] * 3
    assert 0 <= compiled["shared"] <= 48 * 1024
