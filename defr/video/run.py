"""``VideoRun``: a stream through ``HOIStream`` into its outputs (annotated video, frames / events JSONL, summary).

Outputs, each optional (``VideoOutputs``):

- annotated video: every frame with boxes, track ids and each human's top interactions
  (``annotate_frame``); a skipped frame becomes a grey frame saying so, so the video keeps its timing;
- frames JSONL: one line per frame, in frame order: ``{"frame", "time_s", "width", "height",
  "boxes_h", "boxes_o", "hoi", "scores", "human_id", "object_id"}`` (+ ``"skipped": {"stage",
  "reason"}`` for a skipped frame, with empty lists);
- events JSONL: one ``Interaction`` a line as it closes;
- summary JSON (``Summary``, ``SUMMARY_FORMAT``): frames, achieved fps, per-stage latency, skipped
  frames, events, whether the set is complete and why the run stopped.

The outputs of a run are one set, never mixed with a previous run's:

1. outputs that are one file, or the input, or not regular files, are refused before anything is
   written (``VideoOutputs``, through ``defr.files.OutputSet``, the seam every command writes
   through; a video run is its ``stream`` kind: the files are written as the run goes, and the
   summary says whether the set is complete); temporaries that killed runs left beside the outputs
   are removed;
2. the summary is written first, with ``"complete": false``; then the previous video is removed and
   the JSONL files are started empty. From here on every output on disk is this run's, and a run
   that is killed without a chance to finish (SIGKILL, power loss) leaves ``"complete": false``;
3. each frame goes to every output or to none (``InterruptGuard.hold``): the video and the frames
   JSONL hold the same frames; JSONL lines are whole (``JsonlWriter``);
4. whatever ends the run (the stream's end, Ctrl-C or SIGTERM: ``StreamInterrupted``, an error
   that cannot go on) the open events are closed and written, the video is finalised (renamed from
   its temporary; removed if that fails) and the summary rewritten with ``"complete": true`` and
   why the run stopped; then the interruption or error propagates.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from defr.errors import ConfigError
from defr.files import OutputRefused, OutputSet, write_json
from defr.runtime import HOIDetector
from defr.signals import Interrupted, InterruptGuard
from defr.video.annotate import annotate_frame
from defr.video.detectors import ObjectDetector
from defr.video.errors import OutputError
from defr.video.pipeline import HOIStream, StreamConfig
from defr.video.records import FrameResult, Interaction
from defr.video.writers import VIDEO_CONTAINERS, JsonlWriter, VideoWriter, clean_stale_temporaries

SUMMARY_FORMAT = "defr-video-summary/2"
OUTPUT_NAMES = ("video", "frames", "events", "summary")


@dataclass
class VideoOutputs:
    """Where a run writes; None skips an output. ``top``: interactions per human in the video.

    Two outputs that are one file (the same path, a symlink or a hard link to it), an output that is
    not a regular file or a new path, and a video whose suffix names no video container are refused
    (``defr.files.OutputRefused``), and so is an output that is one of the run's inputs (``check_inputs``).
    """

    video: Path | None = None
    frames: Path | None = None
    events: Path | None = None
    summary: Path | None = None
    top: int = 2

    def __post_init__(self) -> None:
        for name in OUTPUT_NAMES:
            if (value := getattr(self, name)) is not None:
                setattr(self, name, Path(value))
        if self.top < 1:
            raise ConfigError(f"top must be >= 1 interaction per human, not {self.top}")
        if self.video is not None and self.video.suffix.lower() not in VIDEO_CONTAINERS:
            raise OutputRefused(
                f"{self.video}: not a video file name; name the video output with one of {', '.join(VIDEO_CONTAINERS)}"
            )
        OutputSet(self.named())  # refuses outputs that are one file, devices, FIFOs, folders

    def named(self) -> dict[str, Path]:
        """The outputs given, by name (video, frames, events, summary)."""
        return {n: p for n in OUTPUT_NAMES if (p := getattr(self, n)) is not None}

    def check_inputs(self, *inputs) -> None:
        """``OutputRefused`` if an output is one of ``inputs`` (paths; URLs and other sources are ignored)."""
        OutputSet(self.named(), inputs=[p for p in inputs if isinstance(p, (str, os.PathLike))])


@dataclass
class Summary:
    """What a run did (the summary JSON is ``to_dict()``).

    ``complete``: false in the summary written when the run starts, true once every output is
    finalised; a summary that still says false belongs to a run that was killed (or still runs).
    ``stopped``: None (the stream ended), ``"interrupted"`` (``signal``: SIGINT or SIGTERM) or
    ``"error"`` (``error``: what stopped it). ``latency_ms``: per stage (``defr.video.stats``).
    ``outputs``: the files of the run (``video`` None when no video was kept; ``video_note`` why).
    """

    source: str | None
    complete: bool
    frames: int
    processed: int
    skipped: int
    skipped_by_stage: dict[str, int]
    skipped_frames: list[dict]
    events: int
    wall_s: float
    fps: float | None
    latency_ms: dict[str, dict]
    hoi_share: float | None
    batch: int
    stopped: str | None
    signal: str | None
    error: str | None
    outputs: dict[str, str | None]

    def to_dict(self) -> dict:
        return {"format": SUMMARY_FORMAT, **asdict(self)}


class StreamInterrupted(Interrupted):
    """Ctrl-C or SIGTERM during a run, after the outputs were finalised: a ``KeyboardInterrupt``.

    ``summary``: the ``Summary`` written; ``signum``: the signal (the exit code is 128 + signum)."""

    def __init__(self, summary: Summary, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.summary = summary


class VideoRun:
    """One run of an ``HOIStream`` into ``VideoOutputs`` (module docstring: the set and its states).

    Args:
        detector: the ``ObjectDetector``.
        hoi: the ``HOIDetector``.
        outputs: where to write.
        config: the ``StreamConfig`` (batching, tracking, smoothing, events).
        progress: show a progress bar (frames, fps) on stderr.
    """

    def __init__(
        self,
        detector: ObjectDetector,
        hoi: HOIDetector,
        outputs: VideoOutputs,
        config: StreamConfig | None = None,
        progress: bool = True,
    ):
        self.stream = HOIStream(detector, hoi, config)
        self.outputs = outputs
        self.names = list(hoi.meta.class_names)
        self.progress = progress
        self._reset(None)

    def _reset(self, source) -> None:
        self.source_name = None if source is None else _source_name(source)
        self.events = 0
        self.stopped: str | None = None
        self.signum: int | None = None
        self.error: str | None = None
        self.video: VideoWriter | None = None
        self.frames_out: JsonlWriter | None = None
        self.events_out: JsonlWriter | None = None
        self.started = time.perf_counter()

    def run(self, source, fps: float | None = None) -> Summary:
        """Run the stream over ``source`` and write the outputs → the ``Summary`` (also written).

        fps: frame rate of an image folder or iterable (default 30).
        Raises ``StreamInterrupted`` on Ctrl-C or SIGTERM (outputs finalised), ``OutputRefused`` for
        outputs that are one file or an input, ``OutputError`` when an output cannot be written, and what
        ``HOIStream.run`` raises.
        """
        self.outputs.check_inputs(source)
        self._reset(source)
        with InterruptGuard() as guard:
            try:
                self._start()
                self._loop(self.stream.run(source, fps=fps), guard)
            except KeyboardInterrupt as e:
                self.stopped = "interrupted"
                self.signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
            except BaseException as e:
                self.stopped, self.error = "error", f"{type(e).__name__}: {e}"
                raise
            finally:
                with guard.hold(deliver=False):  # a second signal while finalising: the run is ending anyway
                    summary = self._finish()
        if self.stopped == "interrupted":
            raise StreamInterrupted(summary, self.signum)
        return summary

    def _start(self) -> None:
        for path in self.outputs.named().values():
            clean_stale_temporaries(path)
        self._write_summary(self._summary(complete=False))
        if self.outputs.video is not None:
            self.outputs.video.unlink(missing_ok=True)  # the previous run's: never beside this run's files
        if self.outputs.frames is not None:
            self.frames_out = JsonlWriter(self.outputs.frames)
        if self.outputs.events is not None:
            self.events_out = JsonlWriter(self.outputs.events)

    def _loop(self, results, guard: InterruptGuard) -> None:
        bar = tqdm(unit="frame", desc="video", disable=not self.progress, dynamic_ncols=True)
        try:
            for result in results:
                if bar.total is None and self.stream.source.total:
                    bar.total = self.stream.source.total
                with guard.hold():  # the frame goes to every output or to none
                    self._write(result)
                bar.update()
        finally:
            results.close()  # stops the worker threads if the loop left early
            bar.close()

    def _write(self, result: FrameResult) -> None:
        times = self.stream.times
        if self.outputs.video is not None:
            if self.video is None:
                self.video = VideoWriter(self.outputs.video, self.stream.source.fps)
            t = time.perf_counter()
            picture = _picture(result, self.names, self.outputs.top, self.video.size)
            times.add("draw", time.perf_counter() - t)
            t = time.perf_counter()
            self.video.write(picture)
            times.add("write", time.perf_counter() - t)
        if self.frames_out is not None:
            self.frames_out.write(result.to_json())
        self._write_events(result.events)

    def _write_events(self, events: list[Interaction]) -> None:
        for e in events:
            self.events += 1
            if self.events_out is not None:
                self.events_out.write(e.to_json())

    def _finish(self) -> Summary:
        """Close the open events, finalise every output, write the complete summary → it.

        A failure here does not hide the error that stopped the run: it becomes the summary's
        ``error`` only when there is none yet."""
        try:
            if self.stopped is not None:
                self._write_events(self.stream.close_events())
        except OutputError as e:
            self.error = self.error or f"OutputError: {e}"
        note = self._finish_video()
        for w in (self.frames_out, self.events_out):
            if w is not None:
                w.close()
        summary = self._summary(complete=True, video_note=note)
        try:
            self._write_summary(summary)
        except OutputError:
            if self.stopped != "error":
                raise
        return summary

    def _finish_video(self) -> str | None:
        """Finalise the video → None, or a note saying why it was not kept."""
        if self.video is None:
            return None
        try:
            self.video.close()
        except Exception as e:  # noqa: BLE001 - close() removed the partial file; the summary says why
            return f"partial video removed: {e}"
        return None

    def _write_summary(self, summary: Summary) -> None:
        if self.outputs.summary is None:
            return
        try:
            write_json(summary.to_dict(), self.outputs.summary, indent=2)
        except OSError as e:
            raise OutputError(f"{self.outputs.summary}: cannot write the summary ({e.strerror or e})") from None

    def _summary(self, complete: bool, video_note: str | None = None) -> Summary:
        stream = self.stream
        wall = time.perf_counter() - self.started
        skips = stream.skips.summary()
        hoi_time = stream.times.total("preprocess") + stream.times.total("hoi")
        if complete:
            video = self.video.path if self.video is not None and self.video.frames and video_note is None else None
        else:
            video = self.outputs.video  # where this run's video will be
        return Summary(
            source=stream.source.name if stream.source is not None else self.source_name,
            complete=complete,
            frames=stream.frames,
            processed=stream.frames - skips["skipped"],
            skipped=skips["skipped"],
            skipped_by_stage=skips["skipped_by_stage"],
            skipped_frames=skips["skipped_frames"],
            events=self.events,
            wall_s=round(wall, 3),
            fps=round(stream.frames / wall, 3) if wall > 0 else None,
            latency_ms=stream.times.summary(),
            hoi_share=round(hoi_time / wall, 4) if wall > 0 else None,
            batch=stream.config.batch,
            stopped=self.stopped,
            signal=signal.Signals(self.signum).name if self.signum is not None else None,
            error=self.error,
            outputs={
                "video": _text(video),
                "video_note": video_note,
                "frames": _text(self.outputs.frames),
                "events": _text(self.outputs.events),
            },
        )


def run_video(
    source,
    detector: ObjectDetector,
    hoi: HOIDetector,
    outputs: VideoOutputs,
    config: StreamConfig | None = None,
    fps: float | None = None,
    progress: bool = True,
) -> Summary:
    """``VideoRun(detector, hoi, outputs, config, progress).run(source, fps)``: one run → its ``Summary``."""
    return VideoRun(detector, hoi, outputs, config, progress).run(source, fps)


def _source_name(source) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__


def _text(path: Path | None) -> str | None:
    return os.fspath(path) if path is not None else None


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
