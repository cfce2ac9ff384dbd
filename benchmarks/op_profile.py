"""Where the time goes, per op group, in both CPU runtimes: ONNX Runtime's profiler and OpenVINO's performance counters.

Exports a random-weight model (``model.onnx`` and the default ``model.int8.onnx``), then runs each file at
B images and P pairs per image at one thread in ONNX Runtime (``SessionOptions.enable_profiling``, summed by
``benchmarks/ort_profile.py``'s op groups) and in OpenVINO (``PERF_COUNT``: each executed node's time, on a
copy of the graph reshaped to the call's static shapes so every node's shapes, and so its FLOPs, are known).
Op groups: ``linear`` (MatMul / Gemm / OpenVINO's FullyConnected with a weight), ``attention`` (MatMuls of
two activations), ``conv``, ``softmax``, ``layernorm`` (OpenVINO: MVN), ``gelu``, ``other``. Per group:
ms per call, % of the call's kernel time, GFLOP and the GFLOP/s reached (matrix products and the patch
convolution; 2 × multiply-adds), and that rate as a fraction of the fp32 GEMM floor at the same threads
(``benchmarks/matmul.py``'s ``fp32_floor``: its result file when measured on this CPU, else measured now; int8
groups too, against the fp32 floor: ``matmul.py`` has no int8 GEMM rate).

    python benchmarks/op_profile.py --backbone ViT-B-32 --image-size 224 \\
        --out benchmarks/results/op_profile_ViT-B-32_224.json
    python benchmarks/op_profile.py --dry-run --out /tmp/op_profile.json   # tiny-vit, 64 px, one run (tests)

One thread throughout (``--threads``); on a shared machine the load average goes with the numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from defr.export import ExportConfig, export_model
from defr.export.verify import feeds
from defr.files import write_json
from defr.machine import cpu_has_int8_dot_product, machine_info
from defr.model import create_model, save_checkpoint
from defr.optional import import_openvino
from defr.runtime.contract import example_inputs
from defr.runtime.openvino_backend import OpenVinoConfig

OV_LINEAR = {"FullyConnected", "Gemm"}  # OpenVINO's CPU plugin turns MatMul × constant weight into FullyConnected
OV_KINDS = {"MatMul": "attention", "Convolution": "conv", "Softmax": "softmax", "MVN": "layernorm", "Gelu": "gelu"}
FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}


def _script(name: str):
    """A sibling script: ``ort_profile.py`` (its op groups, FLOPs and profiler reading), ``matmul.py`` (the floor)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ov_kind(layer_type: str) -> str:
    if layer_type in OV_LINEAR:
        return "linear"
    return OV_KINDS.get(layer_type, "other")


def ov_flops(op) -> float:
    """2 × multiply-adds of a runtime-model node (FullyConnected, MatMul, the patch Convolution); 0 else."""
    kind = ov_kind(op.get_rt_info()["layerType"].astype(str))
    if kind not in ("linear", "attention", "conv") or op.get_output_partial_shape(0).is_dynamic:
        return 0.0
    out = list(op.get_output_shape(0))
    a = list(op.get_input_shape(0))
    if kind == "conv":
        return 2.0 * out[1] * math.prod(a) if len(a) == 4 and len(out) >= 2 else 0.0
    b = list(op.get_input_shape(1))
    # the inner dimension: what a's last axis and b's share (OpenVINO may keep either transposed)
    inner = a[-1] if a[-1] in (b[-1], b[-2] if len(b) > 1 else b[-1]) else a[-2]
    return 2.0 * math.prod(out) * inner


def ov_profile(path: Path, inputs: dict, threads: int, runs: int) -> dict:
    """OpenVINO's per-node times (``PERF_COUNT``) of ``path`` at ``inputs``' static shapes, summed by op group."""
    ov = import_openvino("OpenVINO's performance counters")
    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({name: list(x.shape) for name, x in inputs.items()})
    props = OpenVinoConfig(threads=threads).properties("int8" if "int8" in path.name else "fp32")
    compiled = core.compile_model(model, "CPU", {**props, "PERF_COUNT": True})
    work = {
        op.get_friendly_name(): (op.get_rt_info()["layerType"].astype(str), ov_flops(op))
        for op in compiled.get_runtime_model().get_ordered_ops()
    }
    request = compiled.create_infer_request()
    request.infer(inputs)  # warm-up
    time_us, flop, by_exec = defaultdict(float), defaultdict(float), defaultdict(lambda: defaultdict(float))
    for _ in range(runs):
        request.infer(inputs)
        for info in request.profiling_info:
            if info.status != info.Status.EXECUTED:
                continue
            layer_type, node_flops = work.get(info.node_name, (info.node_type, 0.0))
            k = ov_kind(layer_type)
            time_us[k] += info.real_time.total_seconds() * 1e6
            flop[k] += node_flops
            by_exec[k][info.exec_type] += info.real_time.total_seconds() * 1e6  # e.g. brgemm_avx2_I8
    total = sum(time_us.values())
    return {
        "kernel_ms": total / 1000 / runs,
        "by_kind": {
            k: {
                "ms": time_us[k] / 1000 / runs,
                "share": time_us[k] / max(total, 1),
                "gflop": flop[k] / runs / 1e9,
                "gflop_per_s": (flop[k] / time_us[k] / 1e3) if time_us[k] and flop[k] else None,
                # which kernels ran the group, ms each: an int8 group partly run in f32 shows here
                "exec_ms": {e: t / 1000 / runs for e, t in sorted(by_exec[k].items(), key=lambda x: -x[1])},
            }
            for k in sorted(time_us, key=time_us.get, reverse=True)
        },
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="ViT-B-32")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=16, help="per image")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dry-run", action="store_true", help="tiny-vit at 64 px, one run: checks the schema")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.dry_run:
        args.backbone, args.image_size, args.runs = "tiny-vit", 64, 1

    ort_profile = _script("ort_profile")
    inputs = feeds(example_inputs(args.image_size, args.batch, args.batch * args.pairs))
    report: dict = {
        "benchmark": "op_profile",
        "command": "python " + " ".join(sys.argv if argv is None else ["benchmarks/op_profile.py", *argv]),
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch": args.batch,
        "pairs": args.pairs,
        "threads": args.threads,
        "runs": args.runs,
        "machine": machine_info(),
        "cpu_isa": "int8 dot product (VNNI / AMX)"
        if cpu_has_int8_dot_product()
        else "no int8 dot product (no VNNI / AMX)",
        "loadavg": {"before": os.getloadavg()},
        "fp32_floor": _script("matmul").fp32_floor(args.threads, 3 if args.dry_run else 10),
        "onnxruntime": {},
        "openvino": {},
    }
    with tempfile.TemporaryDirectory(prefix="op-profile-") as tmp:
        tmp = Path(tmp)
        save_checkpoint(create_model(args.backbone, args.image_size), tmp / "random.safetensors")
        export = ExportConfig(verify=False, int8=True, calibration_images=4 if args.dry_run else 8)
        export_model(tmp / "random.safetensors", tmp / "export", export, log=lambda m: None)
        for precision, name in FILES.items():
            path = tmp / "export" / name
            prefix = str(tmp / precision)
            report["onnxruntime"][precision] = ort_profile.profile(path, inputs, args.threads, args.runs, prefix)
            report["openvino"][precision] = ov_profile(path, inputs, args.threads, args.runs)
    report["loadavg"]["after"] = os.getloadavg()
    write_json(report, args.out, indent=2)
    for runtime in ("onnxruntime", "openvino"):
        for precision, r in report[runtime].items():
            print(f"{runtime} {precision}: kernels {r['kernel_ms']:.1f} ms")
            for k, v in r["by_kind"].items():
                rate = f"{v['gflop_per_s']:.1f} GFLOP/s" if v["gflop_per_s"] else ""
                print(f"  {k:10s} {v['ms']:8.2f} ms {100 * v['share']:5.1f} %  {v['gflop']:7.3f} GFLOP {rate}")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
