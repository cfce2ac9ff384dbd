"""``run_video``: a stream through ``HOIStream`` into its outputs (annotated video, frames / events JSONL, summary).

Outputs, each optional:

- annotated video: every frame with boxes, track ids and each human's top interactions
  (``annotate_frame``); a skipped frame becomes a grey frame saying so, so the video keeps its timing;
- frames JSONL: one line per frame, in frame order: ``{"frame", "time_s", "width", "height",
  "boxes_h", "boxes_o", "hoi", "scores", "human_id", "object_id"}`` (+ ``"skipped": {"stage",
  "reason"}`` for a skipped frame, with empty lists);
- events JSONL: one ``Interaction`` a line as it closes;
- summary JSON (``SUMMARY_FORMAT``): frames, achieved fps, per-stage latency, skipped frames, events.

JSONL lines are flushed one by one, and a Ctrl-C never falls between one frame's writes
(``InterruptGuard``): the video and the frames JSONL hold the same frames. If the run stops early
(Ctrl-C: ``StreamInterrupted``; or an error that cannot go on) the open events are closed and
written, the video is finalised (or removed if that fails) and the summary says why it stopped;
then the interruption or error propagates.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from defr.errors import DefrError
from defr.files import write_json
from defr.runtime import HOIDetector
from defr.video.annotate import annotate_frame
from defr.video.detectors import ObjectDetector
from defr.video.interrupts import InterruptGuard
from defr.video.pipeline import HOIStream, StreamConfig
from defr.video.records import FrameResult
from defr.video.writers import JsonlWriter, VideoWriter

SUMMARY_FORMAT = "defr-video-summary/1"


class StreamInterrupted(DefrError, KeyboardInterrupt):
    """Ctrl-C during ``run_video``, after the outputs were finalised; ``summary`` is what was written.

    A ``KeyboardInterrupt`` (what callers of a Ctrl-C expect) and a ``DefrError`` (every error class
    of the project is one)."""

    def __init__(self, summary: dict):
        super().__init__("interrupted")
        self.summary = summary


@dataclass
class VideoOutputs:
    """Where ``run_video`` writes; None skips an output. ``top``: interactions per human in the video."""

    video: Path | None = None
    frames: Path | None = None
    events: Path | None = None
    summary: Path | None = None
    top: int = 2


def run_video(
    source,
    detector: ObjectDetector,
    hoi: HOIDetector,
    outputs: VideoOutputs,
    config: StreamConfig | None = None,
    fps: float | None = None,
    progress: bool = True,
) -> dict:
    """Run the stream over ``source`` and write ``outputs`` → the summary (also written to ``outputs.summary``).

    Raises ``StreamInterrupted`` on Ctrl-C (outputs finalised) and what ``HOIStream.run`` raises.
    """
    stream = HOIStream(detector, hoi, config)
    names = list(hoi.meta.class_names)
    frames_out = JsonlWriter(outputs.frames) if outputs.frames else None
    events_out = JsonlWriter(outputs.events) if outputs.events else None
    video: VideoWriter | None = None
    state = {"events": 0, "stopped": None, "error": None}
    bar = tqdm(unit="frame", desc="video", disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()

    def write_events(events) -> None:
        for e in events:
            state["events"] += 1
            if events_out:
                events_out.write(e.to_json())

    results = stream.run(source, fps=fps)
    guard = InterruptGuard()
    try:
        with guard:
            for result in results:
                if bar.total is None and stream.source.total:
                    bar.total = stream.source.total
                with guard.hold():  # the frame goes to every output or to none
                    if outputs.video is not None:
                        if video is None:
                            video = VideoWriter(outputs.video, stream.source.fps)
                        t = time.perf_counter()
                        picture = _picture(result, names, outputs.top, video.size)
                        stream.times.add("draw", time.perf_counter() - t)
                        t = time.perf_counter()
                        video.write(picture)
                        stream.times.add("write", time.perf_counter() - t)
                    if frames_out:
                        frames_out.write(result.to_json())
                    write_events(result.events)
                bar.update()
    except KeyboardInterrupt:
        state["stopped"] = "interrupted"
    except BaseException as e:
        state["stopped"], state["error"] = "error", f"{type(e).__name__}: {e}"
        raise
    finally:
        results.close()  # stops the worker threads if the loop left early
        bar.close()
        if state["stopped"]:
            write_events(stream.close_events())
        saved, video_note = _finish_video(video)
        for w in (frames_out, events_out):
            if w:
                w.close()
        summary = _summary(stream, time.perf_counter() - start, state, outputs, saved, video_note)
        if outputs.summary is not None:
            write_json(summary, outputs.summary, indent=2)
    if state["stopped"] == "interrupted":
        raise StreamInterrupted(summary)
    return summary


def _picture(result: FrameResult, names: list[str], top: int, size: tuple[int, int] | None) -> np.ndarray:
    if result.skipped is None:
        return annotate_frame(result, names, top)
    w, h = size or (512, 384)
    image = Image.new("RGB", (w, h), (90, 90, 90))
    text = f"frame {result.index} skipped ({result.skipped.stage}): {result.skipped.reason}"
    ImageDraw.Draw(image).text(
        (8, h // 2), text[: max(20, w // 6)], fill=(255, 255, 255), font=ImageFont.load_default()
    )
    return np.asarray(image)


def _finish_video(video: VideoWriter | None) -> tuple[Path | None, str | None]:
    """Finalise the video → (its path or None, a note when it could not be kept)."""
    if video is None:
        return None, None
    try:
        return video.close(), None
    except Exception as e:  # noqa: BLE001 - close() removed the partial file; the summary says why
        return None, f"partial video removed: {e}"


def _summary(stream: HOIStream, wall: float, state: dict, outputs: VideoOutputs, video, note) -> dict:
    times = stream.times.summary()
    skips = stream.skips.summary()
    processed = stream.frames - skips["skipped"]
    hoi_time = stream.times.total("preprocess") + stream.times.total("hoi")
    return {
        "format": SUMMARY_FORMAT,
        "source": stream.source.name if stream.source else None,
        "frames": stream.frames,
        "processed": processed,
        **skips,
        "events": state["events"],
        "wall_s": round(wall, 3),
        "fps": round(stream.frames / wall, 3) if wall > 0 else None,
        "latency_ms": times,
        "hoi_share": round(hoi_time / wall, 4) if wall > 0 else None,
        "batch": stream.config.batch,
        "stopped": state["stopped"],
        "error": state["error"],
        "outputs": {
            "video": os.fspath(video) if video else None,
            "video_note": note,
            "frames": os.fspath(outputs.frames) if outputs.frames else None,
            "events": os.fspath(outputs.events) if outputs.events else None,
        },
    }
