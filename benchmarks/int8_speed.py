"""INT8 speed by node group: PyTorch eager, ONNX Runtime fp32 and each int8 variant, side by side.

Random weights (speed does not depend on them); each int8 variant is calibrated on a few images of
the built-in synthetic set. One call = one frame batch of B images with P pairs per image, as
``HOIDetector`` makes it; the backends take turns call by call (``defr.bench.time_side_by_side``),
median over the repeats.

    .venv/bin/python benchmarks/int8_speed.py --backbone ViT-B-32 --image-size 672 --threads 1 \\
        --out benchmarks/results/int8_speed_ViT-B-32_672.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from defr.bench import BenchConfig, time_side_by_side
from defr.export import ExportConfig, export_model
from defr.export.calibration import GraphFeeds, load_calibration_set
from defr.export.int8 import Int8Config, quantize
from defr.files import write_json
from defr.machine import machine_info
from defr.model import create_model, save_checkpoint
from defr.runtime import OnnxBackend, TorchBackend
from defr.runtime.contract import RuntimeMeta
from defr.runtime.onnx_session import SessionConfig, make_session
from defr.runtime.sidecar import read_sidecar

VARIANTS = {
    "int8": Int8Config(),
    "int8 linear only": Int8Config(groups=("linear",)),
    "int8 + head": Int8Config(groups=("conv", "linear", "head")),
    "int8 + attention": Int8Config(groups=("conv", "linear", "attention")),
    "int8 + norm": Int8Config(groups=("conv", "linear", "norm")),
    "int8 all groups": Int8Config(groups=("conv", "linear", "attention", "head", "norm")),
    "int8 dynamic": Int8Config(method="dynamic", groups=("linear",)),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="ViT-B-32")
    parser.add_argument("--image-size", type=int, default=672)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=16, help="per image")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calibration-images", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    model = create_model(args.backbone, args.image_size)
    meta = RuntimeMeta.from_model(model)
    cfg = BenchConfig(args.backbone, args.image_size, warmup=args.warmup, repeats=args.repeats, threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="int8-speed-") as tmp:
        tmp = Path(tmp)
        checkpoint = tmp / "random.safetensors"
        save_checkpoint(model, checkpoint)
        export_model(checkpoint, tmp / "export", ExportConfig(verify=False), log=lambda m: None)
        fp32 = tmp / "export" / "model.onnx"
        cal = load_calibration_set(None, args.calibration_images, meta, tmp)
        calibrate, _ = cal.split(args.calibration_images)
        session = make_session(fp32, cfg=SessionConfig(threads=args.threads, cache=False))
        backends = {
            "torch fp32": TorchBackend(model),
            "onnxruntime fp32": OnnxBackend(session, read_sidecar(fp32), "fp32"),
        }
        for name in args.variants:
            path = tmp / "export" / f"{name.replace(' ', '_')}.onnx"
            quantize(fp32, path, VARIANTS[name], GraphFeeds(calibrate, meta), log=print)
            session = make_session(path, cfg=SessionConfig(threads=args.threads, cache=False))
            backends[f"onnxruntime {name}"] = OnnxBackend(session, read_sidecar(fp32), "int8")
        times = time_side_by_side(list(backends.values()), args.image_size, args.batch, args.pairs, cfg)
    medians = {name: 1000 * statistics.median(t) for name, t in zip(backends, times, strict=True)}
    report = {
        "command": "python " + " ".join(sys.argv),
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch": args.batch,
        "pairs": args.pairs,
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": machine_info(),
        "median_ms": medians,
        "times_s": dict(zip(backends, times, strict=True)),
        "speedup_over_ort_fp32": {k: medians["onnxruntime fp32"] / v for k, v in medians.items()},
    }
    write_json(report, args.out, indent=2)
    for k, v in medians.items():
        print(f"{k:34s} {v:9.1f} ms  x{report['speedup_over_ort_fp32'][k]:.2f} vs ORT fp32")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
