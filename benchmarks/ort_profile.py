"""Where ONNX Runtime spends its time on the pair graph, and the floor that leaves for fp32.

Runs ONNX Runtime's profiler (``SessionOptions.enable_profiling``) on the exported fp32 (and int8)
graph at B images and P pairs per image, one thread, and sums kernel time by kind of node:
``linear`` (MatMul / Gemm with a weight: QKV, out-projection, MLP, classifier), ``attention``
(MatMuls of two activations), ``conv``, ``softmax``, ``layernorm``, ``gelu`` (Erf and its
elementwise ops) and ``other``. FLOPs come from the input shapes the profiler records, so the
achieved GFLOP/s of each kind is measured, not assumed. PyTorch eager's time for the same call is
measured side by side (``defr.bench.time_side_by_side``).

The fp32 floor: the graph's FLOPs at the rate ONNX Runtime's own GEMMs reach (the fastest kind),
i.e. what ONNX Runtime would take if everything ran as fast as its matrix products.

    .venv/bin/python benchmarks/ort_profile.py --backbone ViT-B-32 --image-size 672 \\
        --out benchmarks/results/ort_profile_ViT-B-32_672.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

from defr.bench import BenchConfig, time_side_by_side
from defr.export import ExportConfig, export_model
from defr.export.verify import feeds
from defr.files import write_json
from defr.machine import machine_info
from defr.model import create_model, save_checkpoint
from defr.runtime import TorchBackend, load_backend
from defr.runtime.contract import OUTPUT_NAMES, example_inputs
from defr.runtime.onnx_session import SessionConfig, session_options

GELU_OPS = {"Erf", "Div", "Gelu", "BiasGelu"}


MATMUL_OPS = {
    "MatMul",
    "FusedMatMul",
    "Gemm",
    "MatMulIntegerToFloat",
    "QLinearMatMul",
    "DynamicQuantizeMatMul",
    "Einsum",
}
CONV_OPS = {"Conv", "QLinearConv", "NchwcConv", "FusedConv"}


def kind(op: str, shapes: list[list[int]]) -> str:
    """shapes: the input shapes the profiler lists (a prepacked weight is not listed)."""
    if op in MATMUL_OPS:
        activations = [x for x in shapes if len(x) >= 2]
        return "attention" if len(activations) >= 2 and len(activations[1]) > 2 else "linear"
    if op in CONV_OPS:
        return "conv"
    if op == "Softmax":
        return "softmax"
    if op == "LayerNormalization":
        return "layernorm"
    if op in GELU_OPS:
        return "gelu"
    return "other"


def flops(op: str, shapes: list[list[int]], out: list[int]) -> float:
    """2 × multiply-adds of a matrix product (from the first input and the output shape) or of a
    convolution whose stride is its kernel (the patch embedding: 2 · C_out · input elements); 0 else."""
    if not shapes or not out:
        return 0.0
    a = shapes[0]
    if op in MATMUL_OPS and len(a) >= 2:
        return 2.0 * math.prod(out) * a[-1]
    if op in CONV_OPS and len(a) == 4 and len(out) >= 2:
        return 2.0 * out[1] * math.prod(a)
    return 0.0


def profile(path: Path, inputs: dict, threads: int, runs: int, prefix: str) -> dict:
    import onnxruntime as ort

    options = session_options(SessionConfig(threads=threads))
    options.enable_profiling = True
    options.profile_file_prefix = prefix
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run(list(OUTPUT_NAMES), inputs)  # warm-up, left out of the sums below
    for _ in range(runs):
        session.run(list(OUTPUT_NAMES), inputs)
    events = json.loads(Path(session.end_profiling()).read_text())
    runs_seen = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    skip_until = runs_seen[0]["ts"] + runs_seen[0]["dur"]  # leave out the warm-up run
    time_us, work = defaultdict(float), defaultdict(float)
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < skip_until:
            continue
        shapes = [list(next(iter(x.values()))) for x in e["args"].get("input_type_shape", [])]
        outs = [list(next(iter(x.values()))) for x in e["args"].get("output_type_shape", [])]
        k = kind(e["args"]["op_name"], shapes)
        time_us[k] += e["dur"]
        work[k] += flops(e["args"]["op_name"], shapes, outs[0] if outs else [])
    total_ms = sum(time_us.values()) / 1000 / runs
    by_kind = {
        k: {
            "ms": time_us[k] / 1000 / runs,
            "share": time_us[k] / max(sum(time_us.values()), 1),
            "gflop": work[k] / runs / 1e9,
            "gflop_per_s": (work[k] / time_us[k] / 1e3) if time_us[k] and work[k] else None,
        }
        for k in sorted(time_us, key=time_us.get, reverse=True)
    }
    return {"kernel_ms": total_ms, "by_kind": by_kind}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="ViT-B-32")
    parser.add_argument("--image-size", type=int, default=672)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=16, help="per image")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    model = create_model(args.backbone, args.image_size)
    inputs = example_inputs(args.image_size, args.batch, args.batch * args.pairs)
    report: dict = {
        "command": "python " + " ".join(sys.argv),
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch": args.batch,
        "pairs": args.pairs,
        "threads": 1,
        "machine": machine_info(),
    }
    with tempfile.TemporaryDirectory(prefix="ort-profile-") as tmp:
        tmp = Path(tmp)
        save_checkpoint(model, tmp / "random.safetensors")
        export = ExportConfig(verify=False, int8=True, calibration_images=8)
        export_model(tmp / "random.safetensors", tmp / "export", export, log=lambda m: None)
        for precision, name in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
            report[precision] = profile(tmp / "export" / name, feeds(inputs), 1, args.runs, str(tmp / precision))
        cfg = BenchConfig(args.backbone, args.image_size, warmup=1, repeats=args.runs + 2, threads=1)
        backends = [
            TorchBackend(model),
            load_backend(tmp / "export" / "model.onnx", providers=["CPUExecutionProvider"], threads=1),
        ]
        times = time_side_by_side(backends, args.image_size, args.batch, args.pairs, cfg)
    report["torch_ms"], report["onnxruntime_ms"] = (1000 * statistics.median(t) for t in times)
    fp32 = report["fp32"]["by_kind"]
    total_gflop = sum(v["gflop"] for v in fp32.values())
    rate = max(v["gflop_per_s"] or 0 for v in fp32.values())
    report["fp32_gflop"] = total_gflop
    report["fp32_floor_ms"] = 1000 * total_gflop / rate
    report["best_possible_ratio_over_torch"] = report["torch_ms"] / report["fp32_floor_ms"]
    write_json(report, args.out, indent=2)
    for precision in ("fp32", "int8"):
        print(f"{precision}: kernels {report[precision]['kernel_ms']:.1f} ms")
        for k, v in report[precision]["by_kind"].items():
            rate_text = f"{v['gflop_per_s']:.1f} GFLOP/s" if v["gflop_per_s"] else ""
            print(f"  {k:10s} {v['ms']:8.1f} ms {100 * v['share']:5.1f} %  {v['gflop']:7.2f} GFLOP {rate_text}")
    print(
        f"torch {report['torch_ms']:.1f} ms, onnxruntime fp32 {report['onnxruntime_ms']:.1f} ms; fp32 graph "
        f"{total_gflop:.1f} GFLOP, at ORT's best rate {rate:.1f} GFLOP/s: floor {report['fp32_floor_ms']:.1f} ms "
        f"= {report['best_possible_ratio_over_torch']:.2f}× torch at best"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
