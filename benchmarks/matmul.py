"""This CPU's GEMM rates, and the fp32 floor of each ``defr bench`` row: ms per call against FLOPs / rate.

Rates: ``torch.matmul`` (oneDNN / MKL) of square fp32 and bf16 matrices and of the ViT's own shapes
(tokens × width → 4·width, the MLP's first GEMM), one thread and all cores, the BEST of the
repeats (a limit: on a shared machine the median measures the neighbours), 2·M·N·K FLOPs per
product. On a CPU without bf16 instructions PyTorch's bf16 GEMM is converted arithmetic, not a
bf16 rate: the report says whether the CPU has them (``avx512_bf16`` / ``amx_bf16``).

FLOPs of a call: ``torch.utils.flop_counter.FlopCounterMode`` over the PyTorch model's
``forward_pairs`` (the same mask-1 computation the exported graph runs: one backbone pass per image,
the last block's CLS row per pair), for each (batch, pairs) of the bench files given. The floor of a
row is FLOPs / the best measured rate at the row's thread count (fp32 GEMM for fp32, int8 and bf16
rows alike: the fp32 limit, the issue's yardstick); ``floor / median`` is the fraction of that limit. On a
CPU with bf16 instructions a bf16 row also gets its bf16 floor (FLOPs / the bf16 GEMM rate).

    PYTHONPATH=. .venv/bin/python benchmarks/matmul.py --out benchmarks/results/matmul.json \\
        --bench benchmarks/results/bench_openvino_tiny-vit_224_t1.json ...
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from defr.files import write_json
from defr.jsonio import read_json
from defr.machine import cpu_name, machine_info
from defr.model import create_model
from defr.runtime.contract import example_inputs

SQUARE = 1024
SHAPES = {f"{SQUARE}^3": (SQUARE, SQUARE, SQUARE), "400x768 @ 768x3072": (400, 3072, 768)}  # name: (m, n, k)


def cpu_has_bf16() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gemm_rate(m: int, n: int, k: int, dtype: torch.dtype, repeats: int) -> float:
    """GFLOP/s of [m, k] @ [k, n] in ``dtype`` at PyTorch's current thread count (fastest of ``repeats``)."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * m * n * k / min(times) / 1e9


RESULT = Path(__file__).with_name("results") / "matmul.json"


def fp32_floor(threads: int, repeats: int, measured: Path = RESULT) -> dict:
    """The fp32 GEMM rate at ``threads`` threads, the floor other scripts put their rates against:
    ``measured``'s (this script's result file) when it was measured on this CPU, else measured now."""
    if measured.is_file():
        report = read_json(measured)
        by_threads = report["gflop_per_s"].get(str(threads))
        if report["machine"]["cpu"] == cpu_name() and by_threads:
            return {"gflop_per_s": max(by_threads["fp32"].values()), "source": measured.name}
    default = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rate = max(gemm_rate(*shape, torch.float32, repeats) for shape in SHAPES.values())
    finally:
        torch.set_num_threads(default)
    return {"gflop_per_s": rate, "source": f"measured now (best of {repeats}; {measured.name} is another CPU's)"}


def rates(repeats: int) -> dict:
    """{threads: {dtype: {shape: GFLOP/s}}} for 1 thread and all cores."""
    out = {}
    default = torch.get_num_threads()
    try:
        for threads in (1, os.cpu_count() or 1):
            torch.set_num_threads(threads)
            out[str(threads)] = {
                name: {s: gemm_rate(*shape, dtype, repeats) for s, shape in SHAPES.items()}
                for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
            }
    finally:
        torch.set_num_threads(default)
    return out


def call_flops(backbone: str, image_size: int, batch: int, pairs: int) -> int:
    """FLOPs of one backend call (B images, ``pairs`` per image), counted on the PyTorch model."""
    model = create_model(backbone, image_size).eval()
    images, boxes_h, boxes_o, pair_index = example_inputs(image_size, batch, max(batch * pairs, 1))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.forward_pairs(images, boxes_h, boxes_o, pair_index, with_image_logits=True)
    return counter.get_total_flops()


def floors(bench_files: list[Path], measured: dict, bf16: bool) -> list[dict]:
    """Every row of the bench files with its FLOPs, the fp32 floor and the fraction of it reached; on a CPU
    with bf16 instructions (``bf16``) the bf16 rows also get their floor at the bf16 GEMM rate."""
    out, flops_cache = [], {}
    for path in bench_files:
        bench = read_json(path)
        cfg = bench["config"]
        threads = cfg["threads"] or os.cpu_count() or 1
        by_threads = measured.get(str(threads)) or measured[str(max(int(t) for t in measured))]
        rate, bf16_rate = max(by_threads["fp32"].values()), max(by_threads["bf16"].values())
        for r in bench["rows"]:
            key = (cfg["model"], cfg["image_size"], r["batch"], r["pairs"])
            if key not in flops_cache:
                flops_cache[key] = call_flops(*key)
            floor_ms = flops_cache[key] / (rate * 1e9) * 1e3
            out.append(
                {
                    "file": path.name,
                    "model": cfg["model"],
                    "image_size": cfg["image_size"],
                    "threads": threads,
                    **{k: r[k] for k in ("backend", "precision", "batch", "pairs", "median_ms")},
                    "gflop": flops_cache[key] / 1e9,
                    "fp32_rate_gflop_s": rate,
                    "floor_ms": floor_ms,
                    "fraction_of_floor": floor_ms / r["median_ms"],
                }
            )
            if bf16 and r["precision"] == "bf16":
                bf16_floor_ms = flops_cache[key] / (bf16_rate * 1e9) * 1e3
                out[-1].update(
                    bf16_rate_gflop_s=bf16_rate,
                    bf16_floor_ms=bf16_floor_ms,
                    fraction_of_bf16_floor=bf16_floor_ms / r["median_ms"],
                )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--bench", type=Path, nargs="*", default=[], help="defr bench JSON files to put on the floor")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    load_before = os.getloadavg()
    measured, bf16 = rates(args.repeats), cpu_has_bf16()
    report = {
        "machine": machine_info(),
        "cpu_has_bf16": bf16,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "gflop_per_s": measured,
        "rows": floors(args.bench, measured, bf16),
    }
    write_json(report, args.out, indent=1)
    for threads, by_dtype in measured.items():
        for dtype, by_shape in by_dtype.items():
            print(f"{threads} thread(s) {dtype}: " + ", ".join(f"{s} {v:.1f} GFLOP/s" for s, v in by_shape.items()))
    for r in report["rows"]:
        print(
            f"{r['model']} {r['image_size']} t{r['threads']} {r['backend']:<12} {r['precision']:<5} B{r['batch']} "
            f"P{r['pairs']:<4} {r['median_ms']:9.2f} ms  {r['gflop']:8.2f} GFLOP  floor {r['floor_ms']:8.2f} ms  "
            f"{100 * r['fraction_of_floor']:5.1f} %"
        )
    print(f"bf16 instructions: {report['cpu_has_bf16']}; load {load_before} -> {report['loadavg_after']}")


if __name__ == "__main__":
    main()
