"""The cost of pairs on top of the backbone, measured side by side in one process.

For each (frames per call B, pairs per image): the backbone alone (``model(images)``), our runtime
(``forward_pairs`` with image logits: the ``defr::pair_masked_attention`` op, on a CPU its grouped
O(P·L·D) path) and the ONNX graphs' standard-op pair path (every pair against every image's V,
B·P·L·D, which the runtime used before), called in turn (in a rotating order) ``--repeats`` times
after a warm-up; the
median of each and the ratios to the backbone. Interleaving makes the ratios robust to the drift
of a shared machine, which separate processes (``benchmarks/pairs.py``) are not (±15 % here).

    .venv/bin/python benchmarks/pair_overhead.py --out benchmarks/results/pair_overhead_tiny-vit_224.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from defr.export.onnx_export import PairGraph
from defr.files import write_json
from defr.machine import machine_info
from defr.model import create_model
from defr.runtime.contract import example_inputs


def measure(model, batch: int, pairs: int, repeats: int) -> dict:
    s = model.cfg.image_size
    images, boxes_h, boxes_o, index = example_inputs(s, batch, batch * pairs, seed=pairs)
    graph = PairGraph(model)
    calls = {
        "backbone": lambda: model(images),
        "runtime": lambda: model.forward_pairs(images, boxes_h, boxes_o, index, with_image_logits=True),
        "standard_ops": lambda: graph(images, boxes_h, boxes_o, index),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.no_grad():
        for fn in calls.values():
            fn()
        names = list(calls)
        for k in range(repeats):
            for name in names[k % 3 :] + names[: k % 3]:  # a rotating order: no path always follows another
                start = time.perf_counter()
                calls[name]()
                times[name].append(time.perf_counter() - start)
    median = {name: 1000 * statistics.median(t) for name, t in times.items()}
    return {
        "batch": batch,
        "pairs_per_image": pairs,
        "median_ms": median,
        "runtime_over_backbone": median["runtime"] / median["backbone"],
        "standard_ops_over_backbone": median["standard_ops"] / median["backbone"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="tiny-vit")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--pairs", type=int, nargs="+", default=[16, 64, 225])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pair_overhead_tiny-vit_224.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = create_model(args.backbone, args.image_size)
    rows = []
    for batch in args.batches:
        for pairs in args.pairs:
            rows.append(measure(model, batch, pairs, args.repeats))
            r = rows[-1]
            print(f"B={batch} pairs/image={pairs}: runtime {r['runtime_over_backbone']:.3f}× backbone, "
                  f"standard ops {r['standard_ops_over_backbone']:.3f}×  {r['median_ms']}", flush=True)  # fmt: skip
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "backbone": args.backbone,
        "image_size": args.image_size,
        "threads": args.threads,
        "repeats": args.repeats,
        "rows": rows,
    }
    write_json(result, args.out, indent=2)
    return result


if __name__ == "__main__":
    main()
