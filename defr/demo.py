"""``defr demo``: the whole pipeline on a built-in synthetic HOI set, on a CPU, in minutes.

synthesise → train tiny-vit (MiniLM language init, LSE-Sign) → HICO-style evaluation →
HOI detection with noisy GT boxes as the detector + HICO-DET evaluation → ONNX export and an
ONNX Runtime check against PyTorch → HOI on a synthetic video (events scored against the true
spans). Each stage is a function here; ``run_demo`` runs them.

The video stage: ``run_video_demo`` renders a synthetic HOI video (``defr.data.synth.generate_synthetic_video``),
turns its ground-truth boxes into an oracle detector (each coordinate jittered by ``N(0, r·W)`` /
``N(0, r·H)`` of its box, independently per frame, like ``defr box-noise``; scores drawn from
U(0.8, 1)), runs the stream with tracking, smoothing and events, and scores the events: a predicted
event matches a ground-truth span with the same verb and object, temporal IoU >= 0.5 and the same
human and object (each of its track ids mapped to the ground-truth entity whose boxes that track
carried most often during the event).
Precision and recall are also given without the identity condition.

Its output (``OUTPUT/video``): ``synthetic.mp4`` (+ its ``.detections.jsonl`` / ``.events.jsonl``),
``annotated.mp4``, ``frames.jsonl``, ``events.jsonl``, ``summary.json`` and ``video_demo.json``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from defr.data import build_dataset, generate_synthetic, hicodet_files
from defr.data.hicodet import load_annotations
from defr.data.synth import generate_synthetic_video
from defr.eval.box_noise import hicodet_metrics, image_paths, noisy_gt_detections
from defr.eval.classification import evaluate_model
from defr.eval.hicodet import SUMMARY_KEYS
from defr.export import ExportConfig, export_model
from defr.export.exporter import ONNX_FILES
from defr.export.verify import compare_detections
from defr.files import write_json
from defr.model import load_model
from defr.runtime import HOIDetector, load_detector
from defr.runtime.detect import run_detection
from defr.runtime.draw import save_result_images
from defr.runtime.io import read_image
from defr.train import TrainConfig, train
from defr.video.detectors import PrecomputedDetector
from defr.video.events import EventConfig
from defr.video.pipeline import StreamConfig
from defr.video.records import FrameDetections
from defr.video.run import VideoOutputs, run_video
from defr.video.scoring import evaluate_events


@dataclass
class DemoConfig:
    output: Path = Path("demo-output")
    images: int = 2000
    image_size: int = 128
    epochs: int = 18  # about 800 optimizer steps: what a 2-core CPU does in a few minutes
    lr: float = 3e-4  # a random-init tiny ViT trains faster than at the fine-tuning rates of real backbones
    # γ = 100 (the paper) suits fine-tuning pretrained features; a ViT trained from scratch for a few
    # hundred steps learns much faster with a softer scale (docs/benchmarks.md, "demo settings").
    logit_scale: float = 10.0
    seed: int = 0
    detection: bool = True
    export: bool = True
    video: bool = True
    video_frames: int = 240  # 16 s at 15 fps


def run_demo(cfg: DemoConfig) -> dict:
    """Run every stage; returns (and writes to ``OUTPUT/demo.json``) the metrics of each."""
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}}
    timer = time.perf_counter()

    data = generate_synthetic(out / "data", images=cfg.images, seed=cfg.seed, size=cfg.image_size)
    report["synth_seconds"] = _lap(timer)

    train_cfg = TrainConfig(
        dataset="synth",
        data_root=str(data),
        backbone="tiny-vit",
        init="language",
        text_encoder="minilm",
        loss="lse-sign",
        epochs=cfg.epochs,
        batch_size=32,
        image_size=cfg.image_size,
        lr=cfg.lr,
        logit_scale=cfg.logit_scale,
        restart_every=cfg.epochs,  # one cosine cycle: a restart this early costs a short run more than it helps
        seed=cfg.seed,
        output=str(out / "run"),
    )
    checkpoint = train(train_cfg)
    report["train_seconds"] = _lap(timer)

    model = load_model(checkpoint)
    spec = model.cfg.backbone
    test = build_dataset("synth", data, "test", spec.image_size, spec.mean, spec.std)
    metrics = evaluate_model(model, test)
    report["classification"] = {k: metrics[k] for k in ("mAP", "few@1", "few@5", "few@10", "ko_mAP")}
    report["classification"]["chance_mAP"] = _chance_map(test.labels)
    report["eval_seconds"] = _lap(timer)

    if cfg.detection:
        report["detection"] = run_detection_demo(checkpoint, data, out / "detection", seed=cfg.seed)
        report["detection_seconds"] = _lap(timer)
    if cfg.export:
        report["export"] = export_and_check(checkpoint, out / "export", synth_root=data)
        report["export_seconds"] = _lap(timer)
    if cfg.video:
        report["video"] = run_video_demo(checkpoint, out / "video", seed=cfg.seed, frames=cfg.video_frames)
        report["video_seconds"] = _lap(timer)

    write_json(report, out / "demo.json", indent=2)
    return report


def run_detection_demo(checkpoint: Path, synth_root: Path, out_dir: Path, noise: float = 0.05, seed: int = 0) -> dict:
    """Detection stage: noisy synthetic GT boxes as the detector, HICO-DET metrics, pictures.

    synth_root: a ``defr synth`` folder (HICO-DET layout). Writes ``out_dir/detections.json``
    (results format) and ``out_dir/detections_*.png`` (4 images).
    """
    out_dir = Path(out_dir)
    annotations_path, images_dir = hicodet_files(synth_root, "test")
    annotations = load_annotations(annotations_path)
    paths = image_paths(annotations, images_dir)
    detector = HOIDetector.from_checkpoint(checkpoint)
    dets = noisy_gt_detections(annotations, noise, seed)
    results = run_detection(detector, paths, dets)
    detections = write_json(results, out_dir / "detections.json")
    metrics = hicodet_metrics(annotations, results)

    shown = [p for p in paths if results[p.name]["hoi"]][:4]
    images = [read_image(p) for p in shown]
    drawn = detector.detect(images, [dets[p.name] for p in shown], names=[str(p) for p in shown])
    pictures = save_result_images(images, drawn, detector.meta.class_names, out_dir, names=[p.name for p in shown])
    return {
        "noise": noise,
        "images": len(paths),
        "triplets": sum(len(r["hoi"]) for r in results.values()),
        **{k: metrics.get(k) for k in SUMMARY_KEYS},
        "metrics": metrics,
        "detections": str(detections),
        "pictures": [str(p) for p in pictures],
    }


def export_and_check(
    checkpoint: str | os.PathLike, out_dir: str | os.PathLike, synth_root: Path | None = None, max_images: int = 16
) -> dict:
    """The demo's export stage: export (verified), then, with ``synth_root``, detect HOIs on the first
    ``max_images`` synthetic test images with PyTorch and with ONNX Runtime and compare.

    synth_root: a ``defr synth`` folder; its GT boxes are the detections. Returns a JSON-able summary.
    """
    result = export_model(checkpoint, out_dir, ExportConfig(), log=logging.getLogger(__name__).info)
    fp32 = result.comparisons["fp32"]
    report = {
        "files": result.files,
        "comparisons": result.comparisons,
        "max_abs_diff_pair": fp32["max_abs"]["pair_logits"],
        "max_abs_diff_image": fp32["max_abs"]["image_logits"],
        "onnx_latency_ms": {p: c["latency_ms"] for p, c in result.comparisons.items()},
    }
    if synth_root is not None:
        onnx_path = result.out_dir / ONNX_FILES["fp32"]
        report["detection"] = _compare_on_synthetic(Path(checkpoint), onnx_path, Path(synth_root), max_images)
    return report


def _compare_on_synthetic(checkpoint: Path, onnx_path: Path, synth_root: Path, max_images: int) -> dict:
    annotations_path, images_dir = hicodet_files(synth_root, "test")
    annotations = load_annotations(annotations_path)
    paths = image_paths(annotations, images_dir)[:max_images]
    dets = noisy_gt_detections(annotations, 0.0)
    results, seconds = {}, {}
    for backend, detector in (
        ("torch", HOIDetector.from_checkpoint(checkpoint)),
        ("onnxruntime", HOIDetector.from_onnx(onnx_path, providers=["CPUExecutionProvider"])),
    ):
        start = time.perf_counter()
        results[backend] = run_detection(detector, paths, dets, progress=False)
        seconds[backend] = time.perf_counter() - start
    return {**compare_detections(results["torch"], results["onnxruntime"]), "seconds": seconds}


# --- the video stage --------------------------------------------------------------------------------------------

# The demo's scores are low: sigmoid(logit) of a small model trained from scratch times the prior
# (s_h·s_o)^2.8 of oracle scores drawn from [0.8, 1] (about 0.5). Thresholds below the CLI's defaults.
DEMO_EVENTS = EventConfig(on=0.15, off=0.08, min_frames=5)


def oracle_detections(lines: list[dict], ratio: float, seed: int) -> tuple[dict[int, FrameDetections], dict]:
    """GT detection lines → ({frame: noisy FrameDetections}, {(frame, box as a tuple): GT entity id})."""
    rng = np.random.default_rng(seed)
    by_frame, owner = {}, {}
    for line in lines:
        boxes = np.asarray(line["boxes"], dtype=np.float64).reshape(-1, 4)
        w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
        noisy = boxes + rng.normal(0.0, 1.0, boxes.shape) * ratio * np.stack([w, h, w, h], axis=1)
        noisy = np.concatenate([np.minimum(noisy[:, :2], noisy[:, 2:]), np.maximum(noisy[:, :2], noisy[:, 2:])], 1)
        scores = rng.uniform(0.8, 1.0, len(boxes))
        dets = FrameDetections(noisy, line["labels"], scores)
        by_frame[line["frame"]] = dets
        for box, gt_id in zip(dets.boxes.tolist(), line["ids"], strict=True):
            owner[(line["frame"], tuple(box))] = gt_id
    return by_frame, owner


def track_owners(frames_jsonl: Path, owner: dict) -> dict[tuple[int, int], int]:
    """(frame, track id) → the GT entity whose (noisy) box that track carried there, from the frames JSONL."""
    out = {}
    for text in frames_jsonl.read_text().splitlines():
        line = json.loads(text)
        for boxes, ids in ((line["boxes_h"], line["human_id"]), (line["boxes_o"], line["object_id"])):
            for box, tid in zip(boxes, ids, strict=True):
                gt = owner.get((line["frame"], tuple(np.float32(box).tolist())))
                if tid >= 0 and gt is not None:
                    out[(line["frame"], tid)] = gt
    return out


def in_gt_ids(events: list[dict], owners: dict) -> list[dict]:
    """Events with their track ids replaced by the GT entity each track carried most often during the event
    (-1 if never seen): track ids may pass from one entity to another over a video, events are short."""
    out = []
    for e in events:
        ids = {}
        for key in ("human_id", "object_id"):
            votes = Counter(
                owners[(t, e[key])] for t in range(e["start_frame"], e["end_frame"] + 1) if (t, e[key]) in owners
            )
            ids[key] = votes.most_common(1)[0][0] if votes else -1
        out.append({**e, **ids})
    return out


def run_video_demo(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    seed: int = 0,
    frames: int = 240,
    fps: float = 15.0,
    width: int = 256,
    noise: float = 0.05,
    batch: int = 8,
    events: EventConfig | None = None,
    progress: bool = False,
) -> dict:
    """The video stage on ``checkpoint`` → report dict (also ``out_dir/video_demo.json``): event precision /
    recall at temporal IoU >= 0.5 (with and without track identity), frames, fps, stage latencies."""
    out = Path(out_dir)
    start = time.perf_counter()
    synthetic = generate_synthetic_video(out / "synthetic.mp4", frames=frames, fps=fps, width=width, seed=seed)
    render_s = time.perf_counter() - start
    lines = [json.loads(x) for x in synthetic.detections.read_text().splitlines()]
    truth = [json.loads(x) for x in synthetic.events.read_text().splitlines()]
    by_frame, owner = oracle_detections(lines, noise, seed)
    outputs = VideoOutputs(
        video=out / "annotated.mp4",
        frames=out / "frames.jsonl",
        events=out / "events.jsonl",
        summary=out / "summary.json",
    )
    config = StreamConfig(batch=batch, events=events or DEMO_EVENTS)
    hoi = load_detector(checkpoint)
    summary = run_video(
        synthetic.video, PrecomputedDetector.from_dict(by_frame), hoi, outputs, config, progress=progress
    )
    predicted = [json.loads(x) for x in outputs.events.read_text().splitlines()]
    relabelled = in_gt_ids(predicted, track_owners(outputs.frames, owner))
    identity = {e[k]: e[k] for e in truth for k in ("human_id", "object_id")}
    report = {
        "frames": summary["frames"],
        "fps": summary["fps"],
        "noise": noise,
        "events": evaluate_events(relabelled, truth, 0.5, identity),
        "events_any_track": evaluate_events(predicted, truth, 0.5),
        "latency_ms": {k: v["p50_ms"] for k, v in summary["latency_ms"].items()},
        "render_seconds": round(render_s, 1),
        "seconds": round(time.perf_counter() - start, 1),
        "annotated_video": str(outputs.video),
    }
    write_json(report, out / "video_demo.json", indent=2)
    return report


def video_demo_line(report: dict) -> str:
    """One line for the demo's printout."""
    e, a = report["events"], report["events_any_track"]
    return (
        f"video ({report['frames']} frames, {report['fps']:.1f} fps): event precision {e['precision']:.3f}, "
        f"recall {e['recall']:.3f} at tIoU 0.5 ({e['matched']}/{e['truth']} spans; any track: "
        f"{a['precision']:.3f} / {a['recall']:.3f})"
    )


def _chance_map(labels) -> float:
    """Expected mAP of random scores: per class, the fraction of positives among evaluated images."""
    evaluated = labels != 0  # ambiguous entries are not evaluated; NaN counts as negative
    positives = ((labels == 1) & evaluated).sum(0)
    counted = evaluated.sum(0)
    keep = positives > 0
    return float(np.mean(positives[keep] / counted[keep]))


def _lap(start: float) -> float:
    return round(time.perf_counter() - start, 1)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def summary(report: dict) -> str:
    """The demo's report as the lines the command prints."""
    c = report["classification"]
    lines = [
        "",
        "HICO-style classification on the synthetic test split (fractions):",
        "  " + "   ".join(f"{k} {_fmt(c[k])}" for k in ("mAP", "chance_mAP", "few@1", "few@5", "few@10", "ko_mAP")),
    ]
    if "detection" in report:
        d = report["detection"]
        lines.append(
            "HICO-DET-style detection (noisy GT boxes as the detector): "
            + "   ".join(f"{k} {_fmt(d[k])}" for k in ("full", "rare", "non_rare"))
        )
    if "export" in report:
        lines.append(f"export: {_export_line(report['export'])}")
    if "video" in report:
        lines.append(video_demo_line(report["video"]))
    stages = [k for k in report if k.endswith("_seconds")]
    lines.append("seconds: " + ", ".join(f"{k.removesuffix('_seconds')} {report[k]}" for k in stages))
    return "\n".join(lines)


def _export_line(e: dict) -> str:
    return ", ".join(f"{k} {v:.2e}" for k, v in e.items() if k.startswith("max_") and isinstance(v, float))
