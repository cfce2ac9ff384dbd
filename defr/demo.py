"""``defr demo``: the whole pipeline on a built-in synthetic HOI set, on a CPU, in minutes.

synthesise → train tiny-vit (MiniLM language init, LSE-Sign) → HICO-style evaluation →
HOI detection with noisy GT boxes as the detector + HICO-DET evaluation → ONNX export and an
ONNX Runtime check against PyTorch → HOI on a synthetic video (events scored against the true
spans). Each stage is a function here; ``run_demo`` runs them.

The video stage: ``run_video_demo`` renders a synthetic HOI video in the demo's setting at the model's
input size (``defr.data.synth.generate_synthetic_video``), turns its ground-truth boxes into an oracle
detector (each coordinate jittered by ``N(0, r·W)`` / ``N(0, r·H)`` of its box, independently per frame,
like ``defr box-noise``; scores drawn from U(0.8, 1)), runs the stream with tracking, smoothing and events,
and scores the events with ``defr.video.evaluation``: a predicted event matches a ground-truth span with
the same verb and object, temporal IoU >= 0.5 and the same human and object (each track is the
annotated entity whose box it overlaps most). Precision and recall are also given without the identity
condition, beside the frame-level HICO-DET mAP, with the false events counted by cause
(``false_events``). Event thresholds are chosen once for the model on validation clips (other seeds,
their events pooled: one clip's dozen events are too few to choose on), never on a scored one; as a
diagnostic the report also gives the grid's best thresholds on the scored clip itself
(``thresholds_chosen_on_this_clip``): when even those score poorly, the per-frame scores are what limits
the events, not the choice of thresholds.

Its output (``OUTPUT/video``): ``synthetic.mp4`` (+ its ``.detections.jsonl`` / ``.events.jsonl``),
``annotated.mp4``, ``frames.jsonl``, ``events.jsonl``, ``summary.json``, ``events_table.md``,
``timeline.png`` and ``video_demo.json``; further video seeds in ``OUTPUT/video_seedN``; the validation
clips and their runs in ``OUTPUT/video_validation``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from defr.choices import MASK_MODES
from defr.data import build_dataset, generate_synthetic, hicodet_files
from defr.data.hicodet import HICODetAnnotations, load_annotations
from defr.data.synth import generate_synthetic_video
from defr.data.synth.pretraining import HELD_OUT_CLASSES
from defr.data.synth.stats import distinct_boxes, scene_stats
from defr.detections import Detections
from defr.errors import ConfigError
from defr.eval.ap import mean_ap
from defr.eval.classification import evaluate_model, zero_shot_setup
from defr.eval.gt_detections import image_paths, noisy_gt_detections
from defr.eval.hicodet import SUMMARY_KEYS, hicodet_metrics
from defr.export import ExportConfig, export_model
from defr.export.exporter import ONNX_FILES
from defr.export.verify import compare_detections
from defr.files import OutputSet, write_json
from defr.model import load_model
from defr.model.pretrained import builtin_sidecar
from defr.runtime import HOIDetector, ModelOptions, TorchBackend, load_detector
from defr.runtime.detect import run_detection
from defr.runtime.draw import save_result_images
from defr.runtime.io import read_image
from defr.runtime.registry import torch_backend
from defr.train import TrainConfig, train
from defr.video.detectors import PrecomputedDetector
from defr.video.evaluation import (
    ValidationRun,
    choose_event_config,
    evaluate_run,
    false_events_line,
    format_event_table,
    in_truth_ids,
    track_identity,
)
from defr.video.event_files import read_events, read_frame_lines, read_truth_lines
from defr.video.events import EventConfig
from defr.video.pipeline import StreamConfig
from defr.video.run import VideoOutputs, run_video
from defr.video.smoothing import SmoothingConfig
from defr.video.timeline import plot_timeline

VIDEO_FPS = 15.0
VIDEO_NOISE = 0.05  # the oracle detector's box jitter, as a share of each box's size


@dataclass
class DemoConfig:
    output: Path = Path("demo-output")
    images: int = 2000
    image_size: int = 128
    # None: 8 fine-tuning the packaged weights (their validation mAP is 0.82 after one epoch: docs §11), 18 from
    # random init (about 800 optimizer steps: what a 2-core CPU does in a few minutes)
    epochs: int | None = None
    # the packaged language-aligned tiny-vit (``defr pretrain``), fine-tuned as DEFR fine-tunes CLIP; None: random init
    pretrained: str | None = "defr-synth"
    # None: 1e-4 fine-tuning the packaged weights (val mAP 0.82 vs 0.78 at 3e-4 after 3 epochs, docs §11),
    # 3e-4 from random init (a random-init tiny ViT trains faster than at the fine-tuning rates of real backbones)
    lr: float | None = None
    # γ = 100 (the paper) suits fine-tuning pretrained features; a ViT trained from scratch for a few
    # hundred steps learns much faster with a softer scale (docs/benchmarks.md, "demo settings").
    logit_scale: float = 10.0
    seed: int = 0
    detection: bool = True
    export: bool = True
    video: bool = True
    video_frames: int = 300  # 20 s at 15 fps: three lanes of 2-5 s actors hold 10-13 true events
    # crowded: several people side by side, neighbours often with the same kind of object (defr.data.synth.settings),
    # the setting where the pair mask has something to separate; the video is drawn in it too.
    setting: str = "crowded"
    video_seeds: int = 3  # the video stage scores this many clips (seeds seed, seed + 1, ...); the first is drawn

    @property
    def training_epochs(self) -> int:
        if self.epochs is not None:
            return self.epochs
        return 8 if self.pretrained else 18

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1e-4 if self.pretrained else 3e-4


def run_demo(cfg: DemoConfig) -> dict:
    """Run every stage; returns (and writes to ``OUTPUT/demo.json``) the metrics of each."""
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}}
    timer = time.perf_counter()

    data = generate_synthetic(
        out / "data", images=cfg.images, seed=cfg.seed, size=cfg.image_size, overwrite=True, setting=cfg.setting
    )
    report["synth_seconds"] = _lap(timer)

    if cfg.pretrained:
        report["pretrained"] = pretrained_record(cfg.pretrained)
        report["zero_shot"] = zero_shot_demo(cfg.pretrained, data, cfg.image_size)
        report["zero_shot_seconds"] = _lap(timer)
    train_cfg = TrainConfig(
        dataset="synth",
        data_root=str(data),
        backbone="tiny-vit",
        pretrained=cfg.pretrained,
        init="language",
        text_encoder="minilm",
        loss="lse-sign",
        epochs=cfg.training_epochs,
        batch_size=32,
        image_size=cfg.image_size,
        lr=cfg.learning_rate,
        logit_scale=cfg.logit_scale,
        # one cosine cycle: a restart this early costs a short run more than it helps
        restart_every=cfg.training_epochs,
        seed=cfg.seed,
        output=str(out / "run"),
    )
    checkpoint = train(train_cfg, overwrite=True)  # the demo replaces its own earlier run
    report["train_seconds"] = _lap(timer)

    model = load_model(checkpoint)
    spec = model.cfg.backbone
    test = build_dataset("synth", data, "test", spec.image_size, spec.mean, spec.std)
    report["classification"] = classification_row(evaluate_model(model, test), test)
    report["eval_seconds"] = _lap(timer)

    if cfg.detection:
        report["detection"] = run_detection_demo(checkpoint, data, out / "detection", seed=cfg.seed)
        report["detection"]["mask_effect"] = mask_effect(checkpoint, data, seed=cfg.seed)
        report["detection_seconds"] = _lap(timer)
    if cfg.export:
        report["export"] = export_and_check(checkpoint, out / "export", synth_root=data)
        report["export_seconds"] = _lap(timer)
    if cfg.video:
        # thresholds chosen once for the model, on as many validation clips as are scored (other seeds)
        events, report["video_thresholds"] = choose_video_thresholds(
            load_detector(checkpoint), out / "video_validation", [cfg.seed + 1000 + k for k in range(cfg.video_seeds)],
            cfg.video_frames, VIDEO_FPS, cfg.image_size, VIDEO_NOISE, cfg.setting,
        )  # fmt: skip
        runs = [
            run_video_demo(
                checkpoint, out / ("video" if k == 0 else f"video_seed{cfg.seed + k}"), seed=cfg.seed + k,
                frames=cfg.video_frames, fps=VIDEO_FPS, width=cfg.image_size, noise=VIDEO_NOISE, events=events,
                setting=cfg.setting,
            )
            for k in range(cfg.video_seeds)
        ]  # fmt: skip
        report["video"] = runs[0]
        report["video"]["training_scale"] = training_scale(data)
        report["video_seeds"] = [_seed_row(r) for r in runs]
        report["video_seconds"] = _lap(timer)

    with OutputSet({"demo.json": out / "demo.json"}) as staged:
        write_json(report, staged["demo.json"], indent=2)
    return report


def classification_row(metrics: dict, test) -> dict:
    """The demo's classification numbers: mAP, Few@k, known-object mAP, chance, and the mAP of the
    combinations held out of pretraining (``HELD_OUT``) against the others."""
    row = {k: metrics[k] for k in ("mAP", "few@1", "few@5", "few@10", "ko_mAP")}
    row["chance_mAP"] = _chance_map(test.labels)
    seen = [c for c in range(len(metrics["per_class_ap"])) if c not in HELD_OUT_CLASSES]
    row["held_out_mAP"] = mean_ap(metrics["per_class_ap"], HELD_OUT_CLASSES)
    row["seen_mAP"] = mean_ap(metrics["per_class_ap"], seen)
    return row


def pretrained_record(tag: str) -> dict:
    """Which packaged weights the demo fine-tunes: name, file, SHA-256 (checked on load), how they were made."""
    meta = builtin_sidecar("tiny-vit", tag)
    keys = ("file", "sha256", "text_encoder", "images_seen", "seconds", "command", "commit")
    return {"name": tag, **{k: meta.get(k) for k in keys}}


def zero_shot_demo(tag: str, data: Path, image_size: int) -> dict:
    """Zero-shot classification of the packaged weights on the demo's test split (no DEFR training)."""
    model, test = zero_shot_setup("tiny-vit", tag, "minilm", "synth", data, "test", image_size)
    return classification_row(evaluate_model(model, test), test)


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
    with OutputSet({"detections.json": out_dir / "detections.json"}) as staged:
        write_json(results, staged["detections.json"])
    detections = out_dir / "detections.json"
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


STUDY_MASK_MODES = (*MASK_MODES, "none")  # the two masks, and no mask at all


class WholeImageBackend:
    """A ``TorchBackend`` whose pair logits are each pair's image logits: no mask at all (every pair of an
    image scored alike), what detection would be without DEFR's masking."""

    def __init__(self, backend: TorchBackend):
        self.backend = backend
        self.name, self.precision, self.meta = "torch-no-mask", backend.precision, backend.meta
        self.accepts_no_pairs, self.device, self.mask_mode = True, backend.device, "none"

    def __call__(self, images, boxes_h, boxes_o, pair_index):
        _, image_logits = self.backend(images, boxes_h, boxes_o, pair_index)
        return image_logits[pair_index.to(image_logits.device)], image_logits


def images_with_people(annotations: HICODetAnnotations, people: int = 2) -> HICODetAnnotations:
    """The annotations of the images holding at least ``people`` distinct human boxes (``distinct_boxes``)."""
    keep = [i for i, b in enumerate(annotations.boxes_h) if len(distinct_boxes(b)) >= people]
    pick = lambda xs: [xs[i] for i in keep]  # noqa: E731
    return replace(
        annotations,
        filenames=pick(annotations.filenames),
        sizes=annotations.sizes[keep],
        boxes_h=pick(annotations.boxes_h),
        boxes_o=pick(annotations.boxes_o),
        hoi=pick(annotations.hoi),
        object=pick(annotations.object),
    )


def mask_effect(checkpoint: str | os.PathLike, synth_root: Path, noise: float = 0.05, seed: int = 0) -> dict:
    """HICO-DET full / rare / non-rare with the hard mask, the released additive mask and no mask, on the test
    split of ``synth_root`` and on its images with >= 2 people: same model, same (noisy GT) boxes.

    Returns {"all": {mode: metrics}, "two_plus_people": {mode: metrics}, "images", "images_two_plus_people",
    "hard_minus_none": {"all", "two_plus_people"} (mAP points)}.
    """
    annotations_path, images_dir = hicodet_files(synth_root, "test")
    annotations = load_annotations(annotations_path)
    crowded = images_with_people(annotations)
    paths = image_paths(annotations, images_dir)
    dets = noisy_gt_detections(annotations, noise, seed)
    model = load_model(checkpoint)
    report: dict = {"noise": noise, "images": annotations.num_images, "images_two_plus_people": crowded.num_images}
    for mode in STUDY_MASK_MODES:
        backend = torch_backend(model, ModelOptions(mask_mode=None if mode == "none" else mode))  # none: any mode
        detector = HOIDetector(WholeImageBackend(backend) if mode == "none" else backend)
        results = run_detection(detector, paths, dets, progress=False)
        for name, subset in (("all", annotations), ("two_plus_people", crowded)):
            kept = {f: results[f] for f in subset.filenames}
            metrics = hicodet_metrics(subset, kept) if subset.num_images else {}
            report.setdefault(name, {})[mode] = {k: metrics.get(k) for k in SUMMARY_KEYS}
    report["hard_minus_none"] = {
        name: _points(report[name]["hard"]["full"], report[name]["none"]["full"]) for name in ("all", "two_plus_people")
    }
    return report


def _points(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else 100.0 * (a - b)


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
        "files": {name: entry.to_dict() for name, entry in result.files.items()},
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


def oracle_detections(lines: list[dict], ratio: float, seed: int) -> dict[int, Detections]:
    """GT detection lines → {frame: Detections}: every box jittered by N(0, r·W), N(0, r·H) per coordinate,
    scores drawn from U(0.8, 1); the noisy boxes may leave the frame (``in_image=False``)."""
    rng = np.random.default_rng(seed)
    by_frame = {}
    for line in lines:
        boxes = np.asarray(line["boxes"], dtype=np.float64).reshape(-1, 4)
        w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
        noisy = boxes + rng.normal(0.0, 1.0, boxes.shape) * ratio * np.stack([w, h, w, h], axis=1)
        noisy = np.concatenate([np.minimum(noisy[:, :2], noisy[:, 2:]), np.maximum(noisy[:, :2], noisy[:, 2:])], 1)
        scores = rng.uniform(0.8, 1.0, len(boxes))
        by_frame[line["frame"]] = Detections(
            noisy, line["labels"], scores, name=f"frame {line['frame']}", in_image=False
        )
    return by_frame


def video_scale_stats(lines: list[dict], truth: list[dict], width: int, height: int) -> dict:
    """``scene_stats`` of a synthetic video: each frame a scene, its pairs the true events running there."""
    scenes = []
    for line in lines:
        where = dict(zip(line["ids"], line["boxes"], strict=True))
        running = [e for e in truth if e["start_frame"] <= line["frame"] <= e["end_frame"]]
        if running:
            scenes.append(
                ((width, height), [where[e["human_id"]] for e in running], [where[e["object_id"]] for e in running])
            )
    return scene_stats(scenes)


def _stream(video: Path, by_frame: dict, hoi, outputs: VideoOutputs, events: EventConfig, batch: int, progress: bool):
    config = StreamConfig(batch=batch, smoothing=SmoothingConfig(), events=events)
    return run_video(video, PrecomputedDetector(by_frame), hoi, outputs, config, progress=progress).to_dict()


def choose_video_thresholds(
    hoi,
    out_dir: str | os.PathLike,
    seeds: Sequence[int],
    frames: int,
    fps: float,
    width: int,
    noise: float,
    setting: str,
    batch: int = 8,
    progress: bool = False,
) -> tuple[EventConfig, dict]:
    """Event thresholds for ``hoi`` chosen on validation clips (one per seed in ``seeds``, never a scored
    clip; their events pooled, ``choose_event_config``) → (config, {"validation_seeds", "on", "off",
    "min_frames", "validation": the pooled scores}). Clips and runs go to ``out_dir/validation_SEED.*``."""
    out, runs = Path(out_dir), []
    for vseed in seeds:
        name = f"validation_{vseed}"
        clip = generate_synthetic_video(
            out / f"{name}.mp4", frames, fps, width, vseed, setting, overwrite=True
        )  # the demo's own folder
        lines, truth = read_truth_lines(clip.detections), read_events(clip.events, predicted=False)
        outputs = VideoOutputs(frames=out / f"{name}.frames.jsonl", summary=out / f"{name}.summary.json")
        _stream(clip.video, oracle_detections(lines, noise, vseed), hoi, outputs, EventConfig(), batch, progress)
        runs.append(ValidationRun(read_frame_lines(outputs.frames), lines, truth))
    events, chosen = choose_event_config(runs, list(hoi.meta.class_names), SmoothingConfig())
    record = {"validation_seeds": list(seeds), "on": events.on, "off": events.off, "min_frames": events.min_frames}
    return events, {**record, "validation": chosen}


def run_video_demo(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    seed: int = 0,
    frames: int = 240,
    fps: float = VIDEO_FPS,
    width: int = 256,
    noise: float = VIDEO_NOISE,
    batch: int = 8,
    events: EventConfig | None = None,
    setting: str = "default",
    validation_seeds: Sequence[int] | None = None,
    progress: bool = False,
) -> dict:
    """The video stage on ``checkpoint`` → report dict (also ``out_dir/video_demo.json``).

    Renders the synthetic video (``setting``, ``width`` px wide: the training images' long side keeps
    their scale), runs the stream on noisy ground-truth boxes and scores its events against the true
    spans (``defr.video.evaluation``): precision / recall at temporal IoU >= 0.5 with identity and
    without, a per-event table, the frame-level HICO-DET mAP, and ``timeline.png``. Event thresholds:
    ``events`` if given, else chosen on validation clips (``validation_seeds``, default ``seed + 1000``;
    never the scored clip, ``choose_video_thresholds``), the smoothing the library's default.
    """
    seeds = [seed + 1000] if validation_seeds is None else list(validation_seeds)
    if events is None and seed in seeds:
        raise ConfigError(f"validation_seeds {seeds} include the scored clip's seed {seed}: choose others")
    out = Path(out_dir)
    start = time.perf_counter()
    hoi = load_detector(checkpoint)
    names = list(hoi.meta.class_names)
    report: dict = {}
    if events is None:
        events, report["thresholds"] = choose_video_thresholds(
            hoi, out, seeds, frames, fps, width, noise, setting, batch, progress
        )
    else:
        report["thresholds"] = {"on": events.on, "off": events.off, "min_frames": events.min_frames}
    # overwrite=True: the demo's folder is its own, earlier demos' files included
    synthetic = generate_synthetic_video(
        out / "synthetic.mp4", frames, fps, width, seed, setting, overwrite=True
    )  # the demo's own folder
    render_s = time.perf_counter() - start
    lines, truth = read_truth_lines(synthetic.detections), read_events(synthetic.events, predicted=False)
    outputs = VideoOutputs(
        video=out / "annotated.mp4",
        frames=out / "frames.jsonl",
        events=out / "events.jsonl",
        summary=out / "summary.json",
    )
    summary = _stream(synthetic.video, oracle_detections(lines, noise, seed), hoi, outputs, events, batch, progress)
    frame_lines, predicted = read_frame_lines(outputs.frames), read_events(outputs.events, predicted=True)
    scored = evaluate_run(frame_lines, predicted, lines, truth, names)
    # a diagnostic, not a result: the best the threshold grid could do were it chosen on the scored clip itself
    best, best_score = choose_event_config([ValidationRun(frame_lines, lines, truth)], names, SmoothingConfig())
    best_score["min_frames"] = best.min_frames
    relabelled = in_truth_ids(predicted, track_identity(frame_lines, lines))
    timeline = plot_timeline(relabelled, truth, out / "timeline.png", frames=summary["frames"])
    with OutputSet({"events_table.md": out / "events_table.md"}) as staged:
        staged["events_table.md"].write_text(format_event_table(scored["table"]) + "\n")
    height = frame_lines[0]["height"] if frame_lines else 0
    report.update(
        {
            "frames": summary["frames"],
            "fps": summary["fps"],
            "setting": setting,
            "size": [width, height],
            "seed": seed,
            "noise": noise,
            "events": scored["events"],
            "events_any_track": scored["events_any_track"],
            "false_events": scored["false_events"],
            "thresholds_chosen_on_this_clip": {"on": best.on, "off": best.off, **best_score},
            "frame_hicodet": {k: scored["frame_hicodet"][k] for k in ("full", "frames", "pairs")},
            "event_table": scored["table"],
            "scale": video_scale_stats(lines, truth, width, height),
            "latency_ms": {k: v["p50_ms"] for k, v in summary["latency_ms"].items()},
            "render_seconds": round(render_s, 1),
            "seconds": round(time.perf_counter() - start, 1),
            "annotated_video": str(outputs.video),
            "timeline": str(timeline),
        }
    )
    with OutputSet({"video_demo.json": out / "video_demo.json"}) as staged:
        write_json(report, staged["video_demo.json"], indent=2)
    return report


def training_scale(synth_root: Path) -> dict:
    """``scene_stats`` of the synthetic training images (from their HICO-DET-layout annotation file)."""
    annotations = load_annotations(hicodet_files(synth_root, "train")[0])
    sizes = [tuple(x) for x in annotations.sizes.tolist()]
    return scene_stats(zip(sizes, annotations.boxes_h, annotations.boxes_o, strict=True))


def _seed_row(report: dict) -> dict:
    return {
        "seed": report["seed"],
        "events": report["events"],
        "events_any_track": report["events_any_track"],
        "false_events": report["false_events"],
        "frame_hicodet_full": report["frame_hicodet"]["full"],
        "thresholds": report.get("thresholds"),
        "thresholds_chosen_on_this_clip": report["thresholds_chosen_on_this_clip"],
    }


def video_demo_line(report: dict) -> str:
    """One line for the demo's printout."""
    e, a = report["events"], report["events_any_track"]
    return (
        f"video ({report['frames']} frames, {report['fps']:.1f} fps): event precision {e['precision']:.3f}, "
        f"recall {e['recall']:.3f} with identity at tIoU 0.5 ({e['matched']}/{e['truth']} spans; any track: "
        f"{a['precision']:.3f} / {a['recall']:.3f}); frame-level HICO-DET mAP {_fmt(report['frame_hicodet']['full'])}"
        f"\n  false events: {false_events_line(report['false_events'])}"
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
    keys = ("mAP", "chance_mAP", "few@1", "few@5", "few@10", "ko_mAP", "held_out_mAP")
    lines = [""]
    if "zero_shot" in report:
        z, p = report["zero_shot"], report["pretrained"]
        lines += [
            f"zero-shot, {p['name']} (sha256 {p['sha256'][:12]}…) with MiniLM class embeddings, before any training:",
            "  " + "   ".join(f"{k} {_fmt(z[k])}" for k in keys),
        ]
    lines += [
        "HICO-style classification on the synthetic test split (fractions), fine-tuned:",
        "  " + "   ".join(f"{k} {_fmt(c[k])}" for k in keys),
    ]
    if "detection" in report:
        d = report["detection"]
        lines.append(
            "HICO-DET-style detection (noisy GT boxes as the detector): "
            + "   ".join(f"{k} {_fmt(d[k])}" for k in ("full", "rare", "non_rare"))
        )
        if "mask_effect" in d:
            m = d["mask_effect"]
            lines.append(
                "mask effect (full mAP, hard / released / none): "
                + "; ".join(
                    f"{name} ({m[key]}) " + " / ".join(_fmt(m[name][mode]["full"]) for mode in STUDY_MASK_MODES)
                    for name, key in (("all", "images"), ("two_plus_people", "images_two_plus_people"))
                )
            )
    if "export" in report:
        lines.append(f"export: {_export_line(report['export'])}")
    if "video" in report:
        lines.append(video_demo_line(report["video"]))
        for row in report.get("video_seeds", [])[1:]:
            e = row["events"]
            lines.append(
                f"  video seed {row['seed']}: precision {e['precision']:.3f}, recall {e['recall']:.3f} with identity"
            )
    stages = [k for k in report if k.endswith("_seconds")]
    lines.append("seconds: " + ", ".join(f"{k.removesuffix('_seconds')} {report[k]}" for k in stages))
    return "\n".join(lines)


def _export_line(e: dict) -> str:
    return ", ".join(f"{k} {v:.2e}" for k, v in e.items() if k.startswith("max_") and isinstance(v, float))
