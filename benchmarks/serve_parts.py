"""What one ``defr serve`` request costs outside Ray: parsing, the model call, the answer.

``benchmarks/serve.py`` measures whole requests (HTTP → Ray Serve's proxy → ingress → model replica →
back). This times, in one process and without Ray, the parts of a request that are ours, on the same
frames (``defr synth --video``, 256×192, PNG, one frame per request, its ground-truth boxes as the
detections) and model (random weights): ``parse_request`` (JSON, base64, PNG decode, detections),
``detect_frames`` on one frame, and the answer (``response_entries`` + ``json_body``). A served
request's latency minus their sum is what the serving path around them costs.

    PYTHONPATH=. .venv/bin/python benchmarks/serve_parts.py --out benchmarks/results/serve_parts_tiny-vit_224.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from defr.data.synth import generate_synthetic_video
from defr.files import write_json
from defr.machine import machine_info
from defr.model import create_model, save_checkpoint
from defr.runtime import load_detector
from defr.runtime.io import load_frame_detections
from defr.serve.api import Limits, detect_frames, json_body, parse_request, response_entries
from defr.serve.client import detections_json, encode_image
from defr.video import open_source


def median_ms(fn, n: int) -> float:
    """Median wall time of ``fn(i)`` for i in 0..n-1, after one untimed call."""
    fn(0)
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="tiny-vit")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (serve.py's --replica-cpus)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthetic = generate_synthetic_video(tmp / "cams.mp4", frames=args.frames, width=256, seed=0)
        decoded = list(open_source(synthetic.video))
        by_frame = load_frame_detections(synthetic.detections)
        checkpoint = tmp / "model.safetensors"
        save_checkpoint(create_model(args.backbone, args.image_size, seed=0), checkpoint)
        hoi = load_detector(checkpoint)
    bodies = [
        json.dumps(
            {"frames": [{"image": encode_image(f.image), "detections": detections_json(by_frame[f.index])}]}
        ).encode()
        for f in decoded
    ]
    limits, n = Limits(), len(bodies)
    requests = [parse_request(b, limits) for b in bodies]
    outcomes = [detect_frames(hoi, list(r.frames)) for r in requests]
    parts = {
        "parse_request": median_ms(lambda i: parse_request(bodies[i], limits), n),
        "detect_frames": median_ms(lambda i: detect_frames(hoi, list(requests[i].frames)), n),
        "answer": median_ms(lambda i: json_body({"results": response_entries(outcomes[i], None)}), n),
    }
    report = {
        "benchmark": "serve_parts",
        "backbone": args.backbone,
        "image_size": args.image_size,
        "threads": args.threads,
        "frames": n,
        "request_bytes": statistics.median(len(b) for b in bodies),
        "median_ms": parts,
        "total_ms": sum(parts.values()),
        "machine": machine_info("cpu"),
    }
    write_json(report, args.out, indent=2)
    print(json.dumps({k: report[k] for k in ("median_ms", "total_ms", "request_bytes")}, indent=1))


if __name__ == "__main__":
    main()
