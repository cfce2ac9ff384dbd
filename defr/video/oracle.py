"""The oracle detector of synthetic videos and the event thresholds chosen with it (``defr demo``'s video stage).

``oracle_detections``: a synthetic video's ground-truth boxes, each coordinate jittered by ``N(0, r·W)`` /
``N(0, r·H)`` of its box, independently per frame (like ``defr box-noise``), scores drawn from U(0.8, 1).
``choose_video_thresholds``: event thresholds for a model, chosen on validation clips (their events pooled,
``defr.video.evaluation.choose_event_config``), never on a scored clip.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from defr.data.synth import generate_synthetic_video
from defr.data.synth.stats import scene_stats
from defr.detections import Detections
from defr.video.detectors import PrecomputedDetector
from defr.video.evaluation import ValidationRun, choose_event_config
from defr.video.event_files import read_events, read_frame_lines, read_truth_lines
from defr.video.events import EventConfig
from defr.video.pipeline import StreamConfig
from defr.video.run import VideoOutputs, run_video
from defr.video.smoothing import SmoothingConfig


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


def stream_with_oracle(
    video: Path, by_frame: dict, hoi, outputs: VideoOutputs, events: EventConfig, batch: int, progress: bool
) -> dict:
    """``run_video`` of ``video`` with the oracle's ``by_frame`` detections, the default smoothing and ``events``
    → the run's summary as a dict."""
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
        by_frame = oracle_detections(lines, noise, vseed)
        stream_with_oracle(clip.video, by_frame, hoi, outputs, EventConfig(), batch, progress)
        runs.append(ValidationRun(read_frame_lines(outputs.frames), lines, truth))
    events, chosen = choose_event_config(runs, list(hoi.meta.class_names), SmoothingConfig())
    record = {"validation_seeds": list(seeds), "on": events.on, "off": events.off, "min_frames": events.min_frames}
    return events, {**record, "validation": chosen}
