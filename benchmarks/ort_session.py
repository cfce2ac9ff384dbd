"""ONNX Runtime session options, measured: which of them pay off for the exported pair graph.

For one model (random weights; its fp32 and int8 exports), times the graph call at B images and P
pairs per image under each session variant, the variants taking turns call by call (median over
the repeats), and the session creation with and without the optimised-model cache:

- optimisation level ``disable`` / ``basic`` / ``extended`` / ``all`` (``defr.runtime.onnx_session``);
- memory pattern off;
- all cores with thread spinning on (ONNX Runtime's default) and off, against one thread: timed as a
  group of their own with a pause before each call, since a spinning pool would slow the next call;
- ONNX Runtime's transformer optimizer (``onnxruntime.transformers.optimizer``, model type ``vit``:
  the GELU / bias-GELU fusions it finds in our graph), as a candidate for the cached variant;
- session creation: no cache, writing the cache, reading it (the cache is off by default: this is
  the measurement that decided it).

    .venv/bin/python benchmarks/ort_session.py --backbone ViT-B-32 --image-size 672 \\
        --out benchmarks/results/ort_session_ViT-B-32_672.json
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from defr.bench import BenchConfig, time_side_by_side
from defr.export import ExportConfig, export_model
from defr.files import write_json
from defr.machine import machine_info
from defr.model import create_model, save_checkpoint
from defr.runtime import OnnxBackend, load_backend
from defr.runtime.contract import example_inputs, with_dummy_pair
from defr.runtime.onnx_session import SessionConfig, cache_key, cache_path, make_session
from defr.runtime.sidecar import read_sidecar, sha256

ONE = SessionConfig(threads=1, cache=False)
ONE_THREAD = {  # one intra-op thread each: no thread pool, so the variants cannot disturb one another
    "all (default)": ONE,
    "extended": dataclasses.replace(ONE, optimization="extended"),
    "basic": dataclasses.replace(ONE, optimization="basic"),
    "disable": dataclasses.replace(ONE, optimization="disable"),
    "all, no memory pattern": dataclasses.replace(ONE, memory_pattern=False),
}
ALL_CORES = {  # timed apart, with a pause between calls so a spinning pool has stopped before the next call
    "1 thread": ONE,
    "all cores, spinning on": dataclasses.replace(ONE, threads=None),
    "all cores, spinning off": dataclasses.replace(ONE, threads=None, spinning=False),
}
PAUSE_S = 0.05


def time_paused(
    backends: list, image_size: int, batch: int, pairs: int, warmup: int, repeats: int
) -> list[list[float]]:
    """Like ``defr.bench.time_side_by_side``, with ``PAUSE_S`` of sleep before each timed call."""
    inputs = example_inputs(image_size, batch, batch * pairs)
    calls = [(b, (inputs[0], *with_dummy_pair(b, image_size, *inputs[1:]))) for b in backends]
    for backend, args in calls:
        for _ in range(warmup):
            backend(*args)
    times: list[list[float]] = [[] for _ in backends]
    for _ in range(repeats):
        for k, (backend, args) in enumerate(calls):
            time.sleep(PAUSE_S)
            start = time.perf_counter()
            backend(*args)
            times[k].append(time.perf_counter() - start)
    return times


def transformer_fused(src: Path, dst: Path, heads: int, width: int) -> dict:
    """ONNX Runtime's transformer optimizer on our graph (model type vit); the fusions it made."""
    from onnxruntime.transformers import optimizer

    logging.disable(logging.WARNING)  # it warns that symbolic shape inference does not handle our graph
    model = optimizer.optimize_model(str(src), model_type="vit", num_heads=heads, hidden_size=width, opt_level=0)
    logging.disable(logging.NOTSET)
    model.save_model_to_file(str(dst))
    return {k: v for k, v in model.get_fused_operator_statistics().items() if v}


def creation_seconds(path: Path, cfg: SessionConfig, repeats: int, digest: str) -> float:
    """Median seconds to create a session; the file's SHA-256 is given, as ``OnnxBackend`` has it already."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        make_session(path, cfg=cfg, file_sha256=digest)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="ViT-B-32")
    parser.add_argument("--image-size", type=int, default=672)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=16, help="per image")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    model = create_model(args.backbone, args.image_size)
    vit = model.vit.cfg
    bench = BenchConfig(args.backbone, args.image_size, warmup=args.warmup, repeats=args.repeats)
    report: dict = {
        "command": "python " + " ".join(sys.argv),
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch": args.batch,
        "pairs": args.pairs,
        "repeats": args.repeats,
        "machine": machine_info(),
        "median_ms": {},
        "creation_s": {},
    }
    with tempfile.TemporaryDirectory(prefix="ort-session-") as tmp:
        tmp = Path(tmp)
        checkpoint = tmp / "random.safetensors"
        save_checkpoint(model, checkpoint)
        export = ExportConfig(verify=False, int8=True, calibration_images=8)
        export_model(checkpoint, tmp / "export", export, log=lambda m: None)
        for precision, name in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
            path = tmp / "export" / name
            backends = {
                k: load_backend(path, providers=["CPUExecutionProvider"], session=cfg) for k, cfg in ONE_THREAD.items()
            }
            if precision == "fp32":
                fused = tmp / "fused.onnx"
                report["transformer_fusions"] = transformer_fused(path, fused, vit.heads, vit.width)
                session = make_session(fused, cfg=ONE)
                backends["transformer optimizer"] = OnnxBackend(session, read_sidecar(path), "fp32")
            times = time_side_by_side(list(backends.values()), args.image_size, args.batch, args.pairs, bench)
            medians = {k: 1000 * statistics.median(t) for k, t in zip(backends, times, strict=True)}
            del backends
            cores = {
                k: load_backend(path, providers=["CPUExecutionProvider"], session=cfg) for k, cfg in ALL_CORES.items()
            }
            times = time_paused(
                list(cores.values()), args.image_size, args.batch, args.pairs, args.warmup, args.repeats
            )
            medians.update({k: 1000 * statistics.median(t) for k, t in zip(cores, times, strict=True)})
            report["median_ms"][precision] = medians
            del cores
            cached = dataclasses.replace(ONE, cache=True)
            digest = sha256(path)
            cache = cache_path(path, cache_key(digest, cached))
            report["creation_s"][precision] = {
                "no cache": creation_seconds(path, ONE, 5, digest),
                "writing the cache": creation_seconds(path, cached, 1, digest),
                "reading the cache": creation_seconds(path, cached, 5, digest),
                "cache_bytes": os.path.getsize(cache),
            }
    write_json(report, args.out, indent=2)
    for precision, rows in report["median_ms"].items():
        for k, v in rows.items():
            print(f"{precision} {k:28s} {v:9.1f} ms")
        print(precision, report["creation_s"][precision])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
