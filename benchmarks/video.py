"""Throughput of ``defr video`` on the synthetic video with oracle detections, per stage, and the HOI stage
against ``HOIDetector.detect`` on the same frames.

1. ``defr synth --video``: a synthetic HOI video (``--frames`` frames, ``--width`` px wide) and its
   ground-truth boxes (``.detections.jsonl``), which are the detector (``detections:FILE``);
2. the model (random weights: speed does not depend on them) saved as a checkpoint and loaded the
   way the CLI loads it;
3. ``run_video`` with every output (annotated video, frames and events JSONL, summary): achieved fps
   and per-stage latency (p50 / p90 / mean per frame), the HOI stage's share of the wall time;
4. ``run_video`` with the frames JSONL only (no drawing, no encoding competing for the cores);
5. the reference, timed before and after the runs: the same decoded frames and detections through
   ``HOIDetector.detect`` in batches of ``--batch`` (the same preprocessing, ``defr.images``), median
   of ``--repeats`` passes each time; the ratio (preprocess + HOI per frame in the stream) / (detect
   per frame), for both runs: what the stream adds around the model (about 1 when it adds nothing).
   The 1-minute load average at the start and the end is recorded: other work on the machine shows there.

    .venv/bin/python benchmarks/video.py --backbone tiny-vit --image-size 224 \\
        --out benchmarks/results/video_tiny-vit_224.json
    .venv/bin/python benchmarks/video.py --backbone ViT-B-32 --image-size 224 \\
        --out benchmarks/results/video_ViT-B-32_224.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from defr.files import write_json


def reference_detect(hoi, video: Path, detections: Path, batch: int, repeats: int) -> dict:
    """Seconds per frame of ``hoi.detect`` over the decoded frames in batches (median of ``repeats`` passes)."""
    from defr.runtime.io import load_frame_detections
    from defr.video import open_source

    frames = [f for f in open_source(video)]
    dets = load_frame_detections(detections)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(frames), batch):
            chunk = frames[i : i + batch]
            hoi.detect([f.image for f in chunk], [dets[f.index] for f in chunk])
        times.append((time.perf_counter() - start) / len(frames))
    return {"ms_per_frame": round(statistics.median(times) * 1e3, 3), "passes_ms": [round(t * 1e3, 3) for t in times]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="tiny-vit")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from defr.data.synth import generate_synthetic_video
    from defr.machine import machine_info
    from defr.model import create_model, save_checkpoint
    from defr.runtime import load_detector
    from defr.video import PrecomputedDetector, StreamConfig, VideoOutputs, run_video

    load_start = os.getloadavg()[0]  # other work on the machine shows here: these timings share its cores
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthetic = generate_synthetic_video(tmp / "synthetic.mp4", frames=args.frames, width=args.width, seed=0)
        checkpoint = tmp / "model.safetensors"
        save_checkpoint(create_model(args.backbone, args.image_size, seed=0), checkpoint)
        hoi = load_detector(checkpoint)
        outputs = VideoOutputs(tmp / "annotated.mp4", tmp / "frames.jsonl", tmp / "events.jsonl", tmp / "summary.json")
        detector, config = PrecomputedDetector.from_file(synthetic.detections), StreamConfig(batch=args.batch)
        run_video(synthetic.video, detector, hoi, VideoOutputs(frames=tmp / "warm-up.jsonl"), config, progress=False)
        before = reference_detect(hoi, synthetic.video, synthetic.detections, args.batch, args.repeats)
        full = run_video(synthetic.video, detector, hoi, outputs, config, progress=False).to_dict()
        lean_out = VideoOutputs(frames=tmp / "lean.jsonl")
        lean = run_video(synthetic.video, detector, hoi, lean_out, config, progress=False).to_dict()
        after = reference_detect(hoi, synthetic.video, synthetic.detections, args.batch, args.repeats)
    detect_ms = statistics.median(before["passes_ms"] + after["passes_ms"])

    def run_report(summary: dict) -> dict:
        lat = summary["latency_ms"]
        stage = lat["preprocess"]["mean_ms"] + lat["hoi"]["mean_ms"]
        return {
            "fps": summary["fps"],
            "wall_s": summary["wall_s"],
            "latency_ms": lat,
            "hoi_share": summary["hoi_share"],
            "hoi_stage_ms_per_frame": round(stage, 3),
            "hoi_stage_over_detect": round(stage / detect_ms, 3),
        }

    report = {
        "backbone": args.backbone,
        "image_size": args.image_size,
        "frames": full["frames"],
        "frame_size": [args.width, 2 * round(args.width * 3 / 8)],
        "batch": args.batch,
        "full": run_report(full),
        "stream_only": run_report(lean),
        "detect_ms_per_frame": round(detect_ms, 3),
        "reference": {"before": before, "after": after},
        "machine": machine_info("cpu"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
    }
    write_json(report, args.out, indent=2)
    f, lean_r = report["full"], report["stream_only"]
    print(
        f"{args.backbone} {args.image_size}: {f['fps']:.1f} fps with every output (HOI stage "
        f"{f['hoi_stage_ms_per_frame']:.1f} ms/frame, {f['hoi_share']:.0%} of wall), {lean_r['fps']:.1f} fps "
        f"stream only (HOI stage {lean_r['hoi_stage_ms_per_frame']:.1f} ms/frame); detect() {detect_ms:.1f} ms/frame; "
        f"ratios {f['hoi_stage_over_detect']:.2f} / {lean_r['hoi_stage_over_detect']:.2f}"
    )


if __name__ == "__main__":
    main()
