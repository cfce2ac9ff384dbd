"""One prepared GPU check for the pair runtime: kernel correctness, a sanitizer run, and timings.

On the GPU machine (repository root, no install needed; it has torch, triton, timm, no open_clip):

    PYTHONPATH=. python benchmarks/gpu_check.py --out $OUT            # ≤ 8 minutes on an H100/H200

It writes ``$OUT/gpu_check.json`` (and prints a summary):

1. ``kernel``: the Triton kernel against the float32 reference (``defr.kernels.reference``) on CUDA,
   float32 / float16 / bfloat16, both mask modes, random and edge boxes (no patch, whole image,
   patch boundaries, outside the image), unsorted ``pair_index`` over several images. Tolerance:
   1e-5 relative for float32, 1e-2 for float16 / bfloat16 (relative to the largest output).
2. ``sanitizer``: ``compute-sanitizer --tool memcheck`` on one kernel call, when the tool is found.
3. ``timings``: ViT-B/16 (OpenAI CLIP layout, random weights) at 672 px, bf16 and fp16 autocast,
   batch 1 and 32, P per image in {0, 16, 64, 225, 435}: the backbone alone (``DEFR.forward``)
   vs the runtime (``forward_pairs`` with image logits) with the reference pair attention and with
   the kernel, eager and ``torch.compile``; images/s, and achieved TFLOP/s against the backbone's
   FLOPs per image (≈ 415 GFLOP) and the ~790 TFLOP/s bf16 peak; the released approach (one
   backbone per pair) at P = 16 for the ratio. Rows beyond the time budget are marked skipped.

``--dry-run`` runs the same code on the CPU with tiny-vit at 64 px (the kernel through Triton's
interpreter when it is importable that way; no sanitizer, no compile), so CI keeps the script from
rotting: ``tests/test_gpu_check.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

if "--dry-run" in sys.argv and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read by triton once, at its first import

import torch  # noqa: E402

from defr import vocab  # noqa: E402
from defr.kernels import PairOp, pair_attention_reference, pair_masked_attention  # noqa: E402
from defr.machine import machine_info  # noqa: E402
from defr.model import DEFR, BackboneSpec, DEFRConfig, ViTConfig, create_model  # noqa: E402
from defr.model.backbones import CLIP_MEAN, CLIP_STD  # noqa: E402
from defr.runtime.contract import example_inputs  # noqa: E402

PEAK_TFLOPS = 790.0  # bf16 dense, measured on an H100 in this workplace (DESIGN.md §4)
PAIRS = (0, 16, 64, 225, 435)
BATCHES = (1, 32)


def vit_flops(vit: ViTConfig) -> float:
    """Forward FLOPs of one image through the blocks (a multiply-add = 2): per block
    24·L·D² (qkv, out-projection, 4× MLP) + 4·L²·D (scores and weighted sum); L = 1 + G²."""
    length, d = 1 + vit.grid_size**2, vit.width
    return vit.layers * (24 * length * d * d + 4 * length * length * d)


def vit_b16(image_size: int) -> DEFR:
    """OpenAI CLIP's ViT-B/16 architecture at ``image_size`` with random weights (no open_clip needed)."""
    vit = ViTConfig(image_size=image_size, patch_size=16, width=768, layers=12, heads=12, act="quick_gelu")
    spec = BackboneSpec("ViT-B-16", image_size, CLIP_MEAN, CLIP_STD, vit=vit, feature_dim=768)
    torch.manual_seed(0)
    return DEFR(DEFRConfig(spec, vocab.hico().class_names)).eval()


# --- 1. kernel correctness ---------------------------------------------------------------------------------------


def _check_boxes(size: float, gen: torch.Generator, n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    xy = torch.rand(2, n, 2, generator=gen) * size * 1.2 - 0.1 * size
    random = torch.cat([xy, xy + torch.rand(2, n, 2, generator=gen) * size * 0.6], dim=2)
    s, p = size, size / 8
    edges = torch.tensor(
        [
            [[p, p, p, p], [3 * p, 3 * p, 3 * p, 3 * p]],  # zero size on patch borders: CLS only
            [[0, 0, s, s], [2 * p, p, 5 * p, 4 * p]],  # the whole image
            [[p, 2 * p, 4 * p, 6 * p], [2 * p, 0, 8 * p, 2 * p]],  # exactly on patch boundaries
            [[-40, -30, -5, -1], [s + 1, s + 2, s + 30, s + 40]],  # wholly outside
            [[-10, 5, 0.5 * s, s + 10], [0.3 * s, 0.3 * s, 0.7 * s, 0.7 * s]],  # partly outside; nested
        ]
    )
    return torch.cat([random[0], edges[:, 0]]), torch.cat([random[1], edges[:, 1]])


def kernel_check(device: str) -> list[dict]:
    """Triton kernel vs the float32 reference: one row per (dtype, mode)."""
    grid, size, dim, heads, batch = 8, 128, 64, 4, 3
    gen = torch.Generator().manual_seed(0)
    boxes_h, boxes_o = _check_boxes(float(size), gen)
    pair_index = torch.randint(0, batch, (boxes_h.shape[0],), generator=gen)
    qkv = torch.randn(batch, 1 + grid * grid, 3 * dim, generator=gen)
    rows = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        fused = qkv.to(device, dtype)
        q, k, v = fused[:, 0, :dim], fused[:, :, dim : 2 * dim], fused[:, :, 2 * dim :]
        args = (q, k, v, boxes_h.to(device), boxes_o.to(device), pair_index.to(device))
        for mode in ("hard", "released"):
            op = PairOp(heads=heads, grid_size=grid, image_size=size, mask_mode=mode)
            ref = pair_attention_reference(*(a.float() if a.is_floating_point() else a for a in args), op)
            got = pair_masked_attention(*args, op, backend="triton").float()
            error = float((got - ref).abs().max() / ref.abs().max())
            limit = 1e-5 if dtype == torch.float32 else 1e-2
            finite = bool(torch.isfinite(got).all())
            rows.append(
                {"dtype": str(dtype).removeprefix("torch."), "mask_mode": mode, "pairs": len(pair_index),
                 "max_rel_error": error, "limit": limit, "finite": finite, "passed": finite and error <= limit}
            )  # fmt: skip
    return rows


# --- 2. compute-sanitizer ----------------------------------------------------------------------------------------

_SANITIZED_CALL = """
import torch
from defr.kernels import PairOp, pair_masked_attention
q = torch.randn(2, 64, device="cuda")
k, v = torch.randn(2, 65, 64, device="cuda"), torch.randn(2, 65, 64, device="cuda")
boxes = torch.tensor([[0.0, 0.0, 64.0, 64.0], [-5.0, -5.0, 3.0, 3.0], [10.0, 20.0, 40.0, 50.0]], device="cuda")
out = pair_masked_attention(q, k, v, boxes, boxes.flip(0), torch.tensor([0, 1, 1], device="cuda"),
                            PairOp(heads=4, grid_size=8, image_size=64), backend="triton")
torch.cuda.synchronize()
print("ok", tuple(out.shape))
"""


def find_sanitizer() -> str | None:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for root in ("/usr/local/cuda/bin", *(str(Path(p) / "nvidia") for p in sys.path if p)):
        for candidate in Path(root).glob("**/compute-sanitizer") if Path(root).is_dir() else []:
            if os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def sanitizer_check(dry_run: bool) -> dict:
    if dry_run:
        return {"ran": False, "reason": "dry run (CPU)"}
    tool = find_sanitizer()
    if tool is None:
        return {"ran": False, "reason": "compute-sanitizer not found on PATH, in /usr/local/cuda or in nvidia wheels"}
    cmd = [tool, "--tool", "memcheck", "--error-exitcode", "3", sys.executable, "-c", _SANITIZED_CALL]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ})
    tail = (result.stdout + result.stderr)[-3000:]
    return {"ran": True, "tool": tool, "returncode": result.returncode, "passed": result.returncode == 0, "log": tail}


# --- 3. timings --------------------------------------------------------------------------------------------------


def _timer(device: str, repeats: int, warmup: int):
    def run(fn) -> float:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    return run


def released_forward(model: DEFR, images, boxes_h, boxes_o, pair_index) -> torch.Tensor:
    """The released pipeline: the whole backbone per pair, mask in the last block (one call per pair)."""
    out = [
        model.forward_pairs_dense(images[pair_index[i : i + 1]], boxes_h[i : i + 1], boxes_o[i : i + 1],
                                  torch.zeros(1, dtype=torch.long, device=images.device))
        for i in range(pair_index.shape[0])
    ]  # fmt: skip
    return torch.cat(out)


def timings(model: DEFR, device: str, dtypes, batches, pairs, compile_: bool, budget_s: float, repeats: int) -> list:
    """One row per (dtype, eager / compile, path, batch, pairs per image): path ``backbone`` (no pairs),
    ``runtime/reference`` (the grouped PyTorch pair attention) or ``runtime/kernel`` (the custom op:
    the Triton kernel on CUDA)."""
    s = model.cfg.image_size
    flops = vit_flops(model.cfg.backbone.vit)
    run = _timer(device, repeats, warmup=2)
    started, rows = time.perf_counter(), []
    variants = [("eager", model, model.forward_pairs)]
    if compile_:
        variants.append(
            ("compile", torch.compile(model, dynamic=True), torch.compile(model.forward_pairs, dynamic=True))
        )
    paths = {"runtime/reference": "reference", "runtime/kernel": "auto"}
    for dtype in dtypes:
        for mode, backbone, forward_pairs in variants:
            for batch in batches:
                for per_image in pairs:
                    key = {"dtype": str(dtype).removeprefix("torch."), "mode": mode, "batch": batch, "pairs": per_image}
                    if time.perf_counter() - started > budget_s:
                        rows.append({**key, "skipped": "time budget"})
                        continue
                    inputs = tuple(t.to(device) for t in example_inputs(s, batch, batch * per_image))
                    calls = {name: partial(forward_pairs, *inputs, True, "hard", att) for name, att in paths.items()}
                    if per_image == 0:
                        calls = {"backbone": partial(backbone, inputs[0]), **calls}
                    for path, fn in calls.items():
                        with torch.no_grad(), _autocast(device, dtype):
                            seconds = run(fn)
                        rows.append({**key, "path": path, **_rates(batch, seconds, flops)})
    return rows


def _autocast(device: str, dtype: torch.dtype):
    return torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32)


def _rates(images: int, seconds: float, flops_per_image: float) -> dict:
    tflops = images * flops_per_image / seconds / 1e12
    return {
        "ms": 1000 * seconds,
        "images_per_s": images / seconds,
        "tflops": tflops,
        "pct_of_peak": 100 * tflops / PEAK_TFLOPS,
    }


def released_ratio(model: DEFR, device: str, dtype, per_image: int, repeats: int) -> dict:
    s = model.cfg.image_size
    images, bh, bo, index = (t.to(device) for t in example_inputs(s, 1, per_image))
    run = _timer(device, repeats, warmup=1)
    with torch.no_grad(), _autocast(device, dtype):
        ours = run(lambda: model.forward_pairs(images, bh, bo, index, with_image_logits=True))
        released = run(lambda: released_forward(model, images, bh, bo, index))
    return {"pairs": per_image, "ours_ms": 1000 * ours, "released_ms": 1000 * released, "ratio": released / ours}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")), help="Folder for gpu_check.json.")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny-vit at 64 px: checks the script runs.")
    parser.add_argument("--budget", type=float, default=300.0, help="Seconds for the timing section.")
    args = parser.parse_args(argv)
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (use --dry-run on a CPU)")
    device = "cpu" if dry else "cuda"
    started = time.perf_counter()
    report: dict = {"dry_run": dry, "machine": machine_info(device)}

    try:
        report["kernel"] = kernel_check(device)
    except Exception as e:  # noqa: BLE001 — a report, not a test run: record what failed and go on
        report["kernel"] = [{"error": f"{type(e).__name__}: {e}"}]
    report["sanitizer"] = sanitizer_check(dry)

    if dry:
        model, dtypes, batches, pairs, repeats = create_model("tiny-vit", 64), (torch.float32,), (1, 2), (0, 4), 2
    else:
        model, dtypes, batches, pairs, repeats = (
            vit_b16(672).to(device),
            (torch.bfloat16, torch.float16),
            BATCHES,
            PAIRS,
            10,
        )
    gflop = vit_flops(model.cfg.backbone.vit) / 1e9
    report["model"] = {"name": model.cfg.backbone.name, "image_size": model.cfg.image_size, "gflop_per_image": gflop}
    report["model"]["peak_tflops"] = PEAK_TFLOPS
    report["timings"] = timings(model, device, dtypes, batches, pairs, not dry, args.budget, repeats)
    report["released"] = released_ratio(model, device, dtypes[0], 4 if dry else 16, 2 if dry else 3)
    report["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    print(summary(report))
    return report


def summary(report: dict) -> str:
    lines = [
        f"gpu_check ({'dry run' if report['dry_run'] else report['machine'].get('gpu')}), {report['seconds']:.0f} s"
    ]
    for row in report["kernel"]:
        lines.append(f"  kernel {row}")
    lines.append(f"  sanitizer { ({k: v for k, v in report['sanitizer'].items() if k != 'log'}) }")
    for row in report["timings"]:
        if "skipped" in row:
            lines.append(f"  {row}")
            continue
        lines.append(
            f"  {row['dtype']:<9} {row['mode']:<7} {row['path']:<18} B={row['batch']:<3} P/img={row['pairs']:<4} "
            f"{row['ms']:9.2f} ms {row['images_per_s']:9.1f} img/s {row['tflops']:7.1f} TFLOP/s "
            f"{row['pct_of_peak']:5.1f} % of peak"
        )
    r = report["released"]
    lines.append(f"  released approach at P={r['pairs']}: {r['released_ms']:.1f} ms vs ours {r['ours_ms']:.1f} ms")
    lines.append(f"  ({r['ratio']:.0f}× ours)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
