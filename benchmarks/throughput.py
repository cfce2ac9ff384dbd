"""Throughput mode: images/s of a CPU serving many cameras, OpenVINO's ``THROUGHPUT`` hint and streams against
ONNX Runtime's ways of running calls side by side, per core and against the fp32 GEMM floor.

Exports a random-weight model once (``model.onnx``, ONNX Runtime's ``model.int8.onnx`` and, for the ``int8
nncf`` file, NNCF's ``model.int8.nncf.onnx``: the same calibration images, as ``defr bench`` does), then for
each core count C, file, batch B (16 pairs per image) and layout keeps the CPU busy for ``--seconds`` and
counts the images answered. Layouts:

- ``onnxruntime``: ``1 session, threads=C`` (C intra-op threads, one caller: the latency setting), ``1 session,
  C runs, threads=1`` (C callers sharing one session: ONNX Runtime's ``run`` may be called from several threads)
  and ``C sessions, threads=1`` (one caller each). At C = 1 the three are one.
- ``openvino``: ``latency`` (the default hint, C threads, one caller), ``throughput`` (``PERFORMANCE_HINT
  THROUGHPUT``, C threads: OpenVINO picks NUM_STREAMS and OPTIMAL_NUMBER_OF_INFER_REQUESTS, which the row
  records; that many callers), the same compiled model driven by OpenVINO's raw ``AsyncInferQueue`` (``async
  queue``: no Python thread per request, no output copy but one), and the NUM_STREAMS sweep (``streams=S``, C
  threads split over S streams, the number of callers OpenVINO asks for).

Every layout but ``async queue`` runs what users run: backends opened by the front door
(``defr.runtime.load_backend`` with ``ModelOptions(threads=..., openvino=OpenVinoConfig(hint=, streams=))``),
called as ``HOIDetector`` calls them, from one Python thread per caller (both runtimes release the GIL while
they compute; ``OpenVinoBackend`` keeps one infer request per concurrent caller). ``async queue`` needs
OpenVINO's own async API, which the backend does not expose; it shows what the Python threads cost.

Per row: images/s, images/s per core, the call's median / p90 ms (what a camera waits), GFLOP per image
(``benchmarks/matmul.py``'s ``call_flops``: PyTorch's flop counter over ``forward_pairs``) and GFLOP/s per core,
as a fraction of the fp32 GEMM floor per core at C threads: ``benchmarks/results/matmul.json`` when it was
measured on this CPU, else measured here with ``matmul.py``'s ``gemm_rate`` (the report says which). int8 rows
are put against the fp32 floor too (``matmul.py`` has no int8 GEMM rate; on AVX2 without VNNI int8 has no
separate floor worth the name: §9.7).

    # one core (the documented rows: core 1 of the shared 2-core AMD EPYC, about 9 minutes):
    taskset -c 1 python benchmarks/throughput.py --cores 1 --image-size 224 --batch 1 8 --seconds 6 \\
        --out benchmarks/results/throughput_ViT-B-32_224_c1.json
    # both cores beside one core, in one run (an idle 2-core machine, about 6-7 minutes):
    python benchmarks/throughput.py --cores 1 2 --image-size 224 --batch 1 8 --streams 1 2 --seconds 3 \\
        --files fp32 int8 --out benchmarks/results/throughput_ViT-B-32_224_c2.json
    python benchmarks/throughput.py --dry-run --out /tmp/throughput.json   # tiny-vit, 64 px, seconds (tests)

``--cores C`` needs C cores in the process's affinity (``taskset``), else it stops in one line.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from defr.export import ExportConfig, export_model
from defr.export.int8 import INT8_FILE
from defr.export.nncf_int8 import NNCF_FILE
from defr.export.verify import feeds
from defr.files import write_json
from defr.machine import cpu_has_int8_dot_product, machine_info
from defr.model import create_model, save_checkpoint
from defr.optional import import_openvino
from defr.runtime import load_backend
from defr.runtime.contract import OUTPUT_NAMES, example_inputs
from defr.runtime.openvino_backend import OpenVinoConfig

FILES = {"fp32": ("onnx", "model.onnx"), "int8": ("onnx", INT8_FILE), "int8 nncf": ("nncf", NNCF_FILE)}
RUNTIMES = ("onnxruntime", "openvino")
MIN_CALLS = 2  # per caller, however long the calls: a window shorter than a call still measures something
# OpenVINO backends are kept until the process ends: freeing an int8 compiled model between rows aborted 3 of
# 4 ViT-B/32 runs here (an OpenVINO worker thread joins itself: std::system_error "Resource deadlock avoided",
# faulthandler: the main thread in the collection after the row); run as a script, the process exits with
# os._exit once the report is written, without running those destructors at all
KEPT: list = []


def _script(name: str):
    """A sibling script of benchmarks/ loaded as a module (``matmul.py``'s GEMM rate and FLOP count)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def drive(callers: list[Callable[[], object]], batch: int, seconds: float) -> dict:
    """Each of ``callers`` called in a loop from its own thread for ``seconds`` (at least ``MIN_CALLS`` each,
    after one warm-up call each, all started together): images/s and the calls' median / p90 ms."""
    start_line = threading.Barrier(len(callers) + 1)
    times: list[list[float]] = [[] for _ in callers]
    deadline = [0.0]

    def loop(k: int) -> None:
        callers[k]()  # warm-up: first-call allocations, OpenVINO's request creation
        start_line.wait()
        while len(times[k]) < MIN_CALLS or time.perf_counter() < deadline[0]:
            t = time.perf_counter()
            callers[k]()
            times[k].append(time.perf_counter() - t)

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(len(callers))]
    for t in threads:
        t.start()
    start_line.wait()
    start = time.perf_counter()
    deadline[0] = start + seconds
    for t in threads:
        t.join()
    return _rates([x for per in times for x in per], batch, time.perf_counter() - start)


def _rates(call_s: list[float], batch: int, elapsed: float) -> dict:
    ms = sorted(1000 * x for x in call_s)
    return {
        "images_per_s": len(call_s) * batch / elapsed,
        "calls": len(call_s),
        "elapsed_s": elapsed,
        "median_ms": statistics.median(ms),
        "p90_ms": ms[min(len(ms) - 1, int(0.9 * len(ms)))],
    }


def async_queue(compiled, inputs: dict, nireq: int, batch: int, seconds: float) -> dict:
    """The compiled model driven by OpenVINO's ``AsyncInferQueue`` of ``nireq`` requests for ``seconds``."""
    ov = import_openvino("OpenVINO's async queue")
    queue = ov.AsyncInferQueue(compiled, nireq)
    call_s: list[float] = []
    output = compiled.output(OUTPUT_NAMES[0])

    def done(request, _) -> None:  # runs in OpenVINO's thread, with the GIL
        np.array(request.get_tensor(output).data)  # the pair logits copied out, as a caller would
        call_s.append(request.latency / 1000)  # OpenVINO's own ms of this inference

    queue.set_callback(done)
    for _ in range(nireq):  # warm-up
        queue.start_async(inputs)
    queue.wait_all()
    call_s.clear()
    start, k = time.perf_counter(), 0
    while k < MIN_CALLS * nireq or time.perf_counter() < start + seconds:
        queue.start_async(inputs)  # blocks until a request is idle
        k += 1
    queue.wait_all()
    return _rates(call_s, batch, time.perf_counter() - start)


def _call(backend, inputs: tuple) -> Callable[[], object]:
    return lambda: backend(*inputs)


def ort_rows(path: Path, cores: int, inputs: tuple, batch: int, seconds: float) -> list[dict]:
    """ONNX Runtime's layouts at ``cores`` (one at ``cores`` = 1)."""
    # (mode, threads per session, sessions, callers per session)
    layouts = [(f"1 session, threads={cores}", cores, 1, 1)]
    if cores > 1:
        layouts += [(f"1 session, {cores} runs, threads=1", 1, 1, cores), (f"{cores} sessions, threads=1", 1, cores, 1)]
    rows = []
    for mode, threads, sessions, per_session in layouts:
        backends = [load_backend(path, runtime="onnxruntime", threads=threads) for _ in range(sessions)]
        callers = [_call(b, inputs) for b in backends for _ in range(per_session)]
        rows.append({"runtime": "onnxruntime", "mode": mode, "callers": len(callers), **drive(callers, batch, seconds)})
        del backends, callers
        gc.collect()
    return rows


def ov_rows(path: Path, cores: int, inputs: tuple, batch: int, seconds: float, sweep: list[int]) -> list[dict]:
    """OpenVINO's layouts at ``cores``: latency, the throughput hint (and its raw async queue), the streams sweep."""
    rows = []
    configs = [("latency", OpenVinoConfig(threads=cores))]
    configs += [("throughput", OpenVinoConfig(threads=cores, hint="throughput"))]
    configs += [(f"streams={s}", OpenVinoConfig(threads=cores, hint="throughput", streams=s)) for s in sweep]
    for mode, config in configs:
        backend = load_backend(path, runtime="openvino", openvino=config)
        picked = {
            "streams": int(backend.compiled.get_property("NUM_STREAMS")),
            "nireq": int(backend.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")),
            "ov_threads": int(backend.compiled.get_property("INFERENCE_NUM_THREADS")),
        }
        callers = 1 if mode == "latency" else picked["nireq"]
        row = drive([_call(backend, inputs)] * callers, batch, seconds)
        rows.append({"runtime": "openvino", "mode": mode, "callers": callers, **picked, **row})
        if mode == "throughput":
            queue = async_queue(backend.compiled, feeds(inputs), picked["nireq"], batch, seconds)
            rows.append({"runtime": "openvino", "mode": "throughput, async queue", **picked, **queue})
        KEPT.append(backend)  # freed only at exit: see KEPT
    return rows


def export_files(backbone: str, image_size: int, names: list[str], folder: Path, calibration: int) -> dict[str, Path]:
    """The files ``names`` (keys of ``FILES``) of one random-weight model, exported into ``folder``."""
    save_checkpoint(create_model(backbone, image_size), folder / "random.safetensors")
    export = ExportConfig(verify=False, int8="int8" in names, calibration_images=calibration)
    export_model(folder / "random.safetensors", folder / "onnx", export, log=lambda m: None)
    if "int8 nncf" in names:  # calibrated on the same images
        nncf = ExportConfig(verify=False, int8=True, quantizer="nncf", calibration_images=calibration)
        export_model(folder / "random.safetensors", folder / "nncf", nncf, log=lambda m: None)
    return {name: folder / FILES[name][0] / FILES[name][1] for name in names}


def _per_core(row: dict, cores: int, gflop_per_image: float, floor: float) -> dict:
    per_core = row["images_per_s"] / cores
    return {
        "images_per_s_per_core": per_core,
        "gflop_per_s_per_core": per_core * gflop_per_image,
        "fraction_of_fp32_floor": per_core * gflop_per_image / (floor / cores),
    }


def measure(args: argparse.Namespace, report: dict, files: dict[str, Path]) -> None:
    """Every (cores, batch, file, runtime, layout) row into ``report["rows"]``, printed as it comes."""
    matmul = _script("matmul")
    for batch in args.batch:
        inputs = example_inputs(args.image_size, batch, batch * args.pairs)
        gflop = matmul.call_flops(args.backbone, args.image_size, batch, args.pairs) / batch / 1e9
        for cores in args.cores:
            floor = report["fp32_floor"][str(cores)]["gflop_per_s"]
            sweep = args.streams or sorted({1, cores, 2 * cores})
            for name, path in files.items():
                for runtime in args.runtimes:
                    if runtime == "onnxruntime":
                        rows = ort_rows(path, cores, inputs, batch, args.seconds)
                    else:
                        rows = ov_rows(path, cores, inputs, batch, args.seconds, sweep)
                    for row in rows:
                        row = {"cores": cores, "batch": batch, "file": name, **row, "gflop_per_image": gflop}
                        row.update(_per_core(row, cores, gflop, floor))
                        report["rows"].append(row)
                        print(
                            f"C{cores} B{batch} {name:9s} {row['runtime']:11s} {row['mode']:32s} "
                            f"{row['images_per_s']:7.2f} img/s  {row['images_per_s_per_core']:7.2f} /core  "
                            f"median {row['median_ms']:8.1f} ms  {100 * row['fraction_of_fp32_floor']:5.1f} % of floor",
                            flush=True,
                        )


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="ViT-B-32")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--pairs", type=int, default=16, help="per image")
    parser.add_argument("--cores", type=int, nargs="+", default=[1], help="CPU cores (threads) each row uses")
    parser.add_argument("--files", nargs="+", default=list(FILES), choices=list(FILES))
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=list(RUNTIMES))
    parser.add_argument("--streams", type=int, nargs="+", help="OpenVINO's NUM_STREAMS sweep (default 1, C, 2C)")
    parser.add_argument("--seconds", type=float, default=8.0, help="per row")
    parser.add_argument("--calibration-images", type=int, default=8)
    parser.add_argument("--dry-run", action="store_true", help="tiny-vit at 64 px, batch 1, fractions of a second")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.dry_run:
        args.backbone, args.image_size, args.batch, args.seconds, args.calibration_images = "tiny-vit", 64, [1], 0.3, 4
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if max(args.cores) > usable:
        parser.error(f"--cores {max(args.cores)}: this process may run on {usable} core(s) only (taskset)")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    report: dict = {
        "benchmark": "throughput",
        "command": "python " + " ".join(sys.argv if argv is None else ["benchmarks/throughput.py", *argv]),
        **{k: getattr(args, k) for k in ("backbone", "image_size", "pairs", "seconds", "batch", "cores")},
        "machine": machine_info(),
        "cpu_isa": "int8 dot product (VNNI / AMX)" if cpu_has_int8_dot_product() else "AVX2, no VNNI / AMX / bf16",
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg": {"before": os.getloadavg()},
        "fp32_floor": {str(c): _script("matmul").fp32_floor(c, 3 if args.dry_run else 10) for c in args.cores},
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        files = export_files(args.backbone, args.image_size, args.files, Path(tmp), args.calibration_images)
        # the cyclic garbage collector runs only between rows (``gc.collect`` in ``ort_rows``), in this thread,
        # never in one of OpenVINO's (its async queue's callbacks): an OpenVINO object freed there would join
        # its own thread (see KEPT)
        gc.disable()
        try:
            measure(args, report, files)
        finally:
            gc.enable()
    report["loadavg"]["after"] = os.getloadavg()
    write_json(report, args.out, indent=1)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # the OpenVINO backends of KEPT are never freed (see KEPT)
