"""OpenVINO load times: is an IR file (``model.xml`` + ``model.bin``) worth writing beside ``model.onnx``?

``defr-export --openvino`` would write OpenVINO's IR only if reading the ONNX graph at load time is
measurably slower. For one model (random weights; its fp32 export) this times, the variants taking
turns (a fresh ``openvino.Core`` each time, median over the repeats):

- ``read_model``: the ONNX graph (OpenVINO's ONNX frontend converts it) and the IR of the same graph
  (``openvino.save_model``, fp32 weights kept: ``compress_to_fp16=False``);
- ``read_model`` + ``compile_model`` (what loading costs) for both;
- ``OpenVinoBackend`` as the runtime loads the file: the sidecar's SHA-256 check + read + compile,
  and with the verified compiled-model cache (hash the source, read and hash the blob, import);
- ONNX Runtime's session creation of the same file, for reference.

    PYTHONPATH=. .venv/bin/python benchmarks/openvino_load.py --backbone ViT-B-32 --image-size 224 \\
        --out benchmarks/results/openvino_load_ViT-B-32_224.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from defr.export import ExportConfig, export_model
from defr.files import write_json
from defr.machine import machine_info
from defr.model import create_model, save_checkpoint
from defr.optional import import_openvino
from defr.runtime import load_backend
from defr.runtime.openvino_backend import OpenVinoConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="tiny-vit")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="OpenVINO and ONNX Runtime threads")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    ov = import_openvino()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="defr-ov-load-") as tmp:
        root = Path(tmp)
        save_checkpoint(create_model(args.backbone, args.image_size), root / "model.safetensors")
        export_model(root / "model.safetensors", root / "export", ExportConfig(verify=False), log=lambda m: None)
        onnx_path, xml = root / "export" / "model.onnx", root / "ir" / "model.xml"
        ov.save_model(ov.Core().read_model(str(onnx_path)), str(xml), compress_to_fp16=False)
        props = OpenVinoConfig(threads=args.threads).properties("fp32")
        cached = OpenVinoConfig(threads=args.threads, cache=True)
        load_backend(onnx_path, runtime="openvino", openvino=cached)  # writes the cache the "cache" variant reads

        def read(path: Path):
            return lambda: ov.Core().read_model(str(path))

        def read_compile(path: Path):
            return lambda: ov.Core().compile_model(ov.Core().read_model(str(path)), "CPU", props)

        variants = {
            "read onnx": read(onnx_path),
            "read ir": read(xml),
            "read + compile onnx": read_compile(onnx_path),
            "read + compile ir": read_compile(xml),
            "OpenVinoBackend (sha256 + read onnx + compile)": lambda: load_backend(
                onnx_path, runtime="openvino", openvino=OpenVinoConfig(threads=args.threads)
            ),
            "OpenVinoBackend, verified cache (sha256 + blob sha256 + import)": lambda: load_backend(
                onnx_path, runtime="openvino", openvino=cached
            ),
            "OnnxBackend (sha256 + ONNX Runtime session)": lambda: load_backend(
                onnx_path, providers=["CPUExecutionProvider"], threads=args.threads
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for load in variants.values():  # one untimed round: file-system caches warm for every variant
            load()
        for _ in range(args.repeats):
            for name, load in variants.items():
                start = time.perf_counter()
                load()
                times[name].append(time.perf_counter() - start)
        sizes = {
            "model.onnx": onnx_path.stat().st_size,
            "model.xml + model.bin": xml.stat().st_size + xml.with_suffix(".bin").stat().st_size,
            "cache blob": sum(p.stat().st_size for p in (root / "export").glob(".model.ov-*.blob")),
        }
    report = {
        "backbone": args.backbone,
        "image_size": args.image_size,
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": machine_info(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "median_s": {name: statistics.median(t) for name, t in times.items()},
        "times_s": times,
        "bytes": sizes,
    }
    write_json(report, args.out, indent=1)
    for name, t in report["median_s"].items():
        print(f"{name:<70} {t:8.3f} s")
    print(f"sizes: {sizes}; load {load_before} -> {report['loadavg_after']}")


if __name__ == "__main__":
    main()
