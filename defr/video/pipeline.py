"""``HOIStream``: frames → object detections → tracks → HOI triplets → smoothed scores → events, pipelined.

Three stages on three threads, joined by bounded queues (``queue_frames`` frames each):

1. decode (a thread): the source's frames, in order;
2. detect (a thread): batches of up to ``batch`` frames (or what arrived within ``max_latency_ms``
   of the batch's first frame) through the object detector; each frame's output is a
   ``defr.detections.Detections`` (checked when made; a batch the detector refuses is retried frame by
   frame, so only the frames whose output breaks the contract are skipped) and tracked, in frame order;
3. HOI (the caller's thread): batches alike; ``HOIDetector.prepare`` (one batched resize +
   normalise per frame size, on the backend's device: ``defr.images``) and ``detect_prepared`` (one
   backend call per batch), then per frame: the track ids of each triplet, smoothing, events.

Every stage keeps frame order (one thread each, FIFO queues), so results come out in frame order;
decoding and detection of later frames overlap the HOI stage. Memory is bounded: at most
``2 · queue_frames + 3 · batch`` frames are held, and the smoother, event detector, tracker and
latency log forget what they no longer need.

Frames that cannot be used (undecodable, detector output with NaN, a frame the HOI stage rejects)
come out as ``FrameResult``s with ``skipped`` set and are counted in ``HOIStream.skips``. What cannot go
on raises (``VideoError`` for the source, ``VideoError`` for a detections file, or the error as it
is) once the frames before it are out: the worker threads are stopped and the error reaches the
caller. A stream with no decodable frame raises ``VideoError`` at its end.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from defr.detections import DetectionError, Detections, as_detections
from defr.errors import ConfigError
from defr.runtime import HOIDetector, ImageInputError, ImageResult
from defr.video.detectors import ObjectDetector
from defr.video.errors import VideoError
from defr.video.events import EventConfig, EventDetector
from defr.video.records import Frame, FrameResult, Skipped
from defr.video.smoothing import ScoreSmoother, SmoothingConfig
from defr.video.sources import FrameSource, open_source
from defr.video.stats import SkipLog, StageTimes
from defr.video.tracking import ObjectTracker, TrackerConfig

# The longest a batch may wait for more frames: a minute. Waits of inf (or 1e300) ms overflowed the clock's
# time_t in the queue's wait (a traceback), and no stream wants a batch later than that.
MAX_LATENCY_MS = 60_000.0


@dataclass
class StreamConfig:
    batch: int = 8  # frames per detector / HOI call
    max_latency_ms: float = 100.0  # a batch waits at most this long after its first frame
    queue_frames: int = 32  # frames buffered between two stages
    track: bool = True  # False: no tracker, every track id is -1 (no smoothing, no events)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    events: EventConfig = field(default_factory=EventConfig)
    keep_images: bool = True  # FrameResult.image holds the frame (for drawing)

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ConfigError(f"batch must be >= 1 frame, not {self.batch}")
        if not 0 <= self.max_latency_ms <= MAX_LATENCY_MS:
            raise ConfigError(f"max_latency_ms must be in [0, {MAX_LATENCY_MS:g}], not {self.max_latency_ms}")
        if self.queue_frames < 1:
            raise ConfigError(f"queue_frames must be >= 1, not {self.queue_frames}")


class _End:
    """End of the stream (a queue item)."""


@dataclass
class _Failure:
    """An error in a worker thread, handed to the caller's thread (a queue item)."""

    error: BaseException


class HOIStream:
    """Object detector + HOI detector over a stream of frames; ``run(source)`` yields ``FrameResult``s.

    Args:
        detector: an ``ObjectDetector`` (``defr.video.detectors``).
        hoi: the ``HOIDetector`` (any backend: checkpoint, ONNX, engine).
        config: a ``StreamConfig``; keyword arguments override its fields (``batch=8``, ...).

    After (or during) ``run``: ``times`` (per-stage latencies), ``skips`` (skipped frames),
    ``frames`` (frames yielded), ``source`` (the opened source).
    """

    def __init__(self, detector: ObjectDetector, hoi: HOIDetector, config: StreamConfig | None = None, **overrides):
        self.detector = detector
        self.hoi = hoi
        self.config = replace(config or StreamConfig(), **overrides)
        self._reset()

    def _reset(self) -> None:
        self.times = StageTimes()
        self.skips = SkipLog()
        self.frames = 0
        self.source: FrameSource | None = None
        self.events = EventDetector(list(self.hoi.meta.class_names), self.config.events)
        self.smoother = ScoreSmoother(self.config.smoothing)

    def run(self, source, fps: float | None = None) -> Iterator[FrameResult]:
        """Results of every frame of ``source`` (video path or URL, image folder, iterable of frames), in order.

        fps: frame rate of folders and iterables (default 30). Events still open at the end of the
        stream are closed on the last result; after an interruption ``close_events()`` closes them.
        """
        self._reset()
        self.source = open_source(source, fps)
        tracker = ObjectTracker(self.config.tracker, self.source.fps) if self.config.track else None
        stop = threading.Event()
        decoded: queue.Queue = queue.Queue(self.config.queue_frames)
        detected: queue.Queue = queue.Queue(self.config.queue_frames)
        workers = [
            threading.Thread(target=self._decode, args=(self.source, decoded, stop), name="defr-decode", daemon=True),
            threading.Thread(
                target=self._detect, args=(decoded, detected, tracker, stop), name="defr-detect", daemon=True
            ),
        ]
        for w in workers:
            w.start()
        pending: FrameResult | None = None
        decoded_any = False
        try:
            while True:
                batch, done = _take_batch(detected, self.config.batch, self.config.max_latency_ms, stop)
                failure = batch.pop() if batch and isinstance(batch[-1], _Failure) else None
                for result in self._hoi_stage(batch):
                    decoded_any |= result.skipped is None or result.skipped.stage != "decode"
                    if pending is not None:
                        self.frames += 1
                        yield pending
                    pending = result
                if failure is not None:  # the frames before it are out; then the error
                    if pending is not None:
                        self.frames += 1
                        yield pending
                    raise failure.error
                if done:
                    break
            if pending is not None:
                pending.events.extend(self.close_events())
                self.frames += 1
                yield pending
            if not decoded_any:
                detail = f" ({len(self.skips)} could not be decoded)" if len(self.skips) else ""
                raise VideoError(f"{self.source.name}: no frames{detail}")
        finally:
            stop.set()
            for q in (decoded, detected):
                _drain(q)
            for w in workers:
                w.join(timeout=5)

    def close_events(self) -> list:
        """Close the open events at their last frame (end of stream, interruption) → those events."""
        return self.events.close_all()

    # --- stage 1: decode -------------------------------------------------------------------------------------

    def _decode(self, source: FrameSource, out: queue.Queue, stop: threading.Event) -> None:
        try:
            frames = iter(source)
            while not stop.is_set():
                t = time.perf_counter()
                item = next(frames, None)
                if item is None:
                    break
                if isinstance(item, Frame):
                    self.times.add("decode", time.perf_counter() - t)
                if not _put(out, item, stop):
                    return
            _put(out, _End(), stop)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread, which raises it
            _put(out, _Failure(e), stop)

    # --- stage 2: detect and track ---------------------------------------------------------------------------

    def _detect(self, inp: queue.Queue, out: queue.Queue, tracker: ObjectTracker | None, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                batch, done = _take_batch(inp, self.config.batch, self.config.max_latency_ms, stop)
                frames = [x for x in batch if isinstance(x, Frame)]
                dets: dict[int, Detections | Skipped] = {}
                if frames:
                    t = time.perf_counter()
                    dets = self._object_detections(frames)
                    self.times.add("detect", time.perf_counter() - t, len(frames))
                for item in batch:
                    if isinstance(item, Frame):
                        item = self._checked(item, dets[item.index], tracker)
                    if not _put(out, item, stop):
                        return
                if done:
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread, which raises it
            _put(out, _Failure(e), stop)

    def _object_detections(self, frames: list[Frame]) -> dict[int, Detections | Skipped]:
        """Each frame's detections; a batch the detector refuses (``DetectionError``) frame by frame, so only
        the frames whose own output breaks the contract become ``Skipped``."""
        try:
            outputs = self.detector([f.image for f in frames], [f.index for f in frames])
            if len(outputs) != len(frames):
                raise VideoError(f"the object detector returned {len(outputs)} results for {len(frames)} frames")
            return {f.index: as_detections(d, name=f"frame {f.index}") for f, d in zip(frames, outputs, strict=True)}
        except DetectionError as e:
            if len(frames) == 1:
                f = frames[0]
                return {f.index: Skipped(f.index, f.time_s, "detect", str(e), f.size)}
        out = {}
        for f in frames:
            out.update(self._object_detections([f]))
        return out

    def _checked(self, frame: Frame, dets: Detections | Skipped, tracker: ObjectTracker | None):
        """(frame, its tracked detections), or ``Skipped`` when the detector's output is unusable."""
        if isinstance(dets, Skipped):
            return dets
        t = time.perf_counter()
        ids = tracker.update(dets) if tracker is not None else np.full(len(dets), -1, dtype=np.int64)
        self.times.add("track", time.perf_counter() - t)
        return frame, dets.with_track_ids(ids)

    # --- stage 3: HOI, smoothing, events ---------------------------------------------------------------------

    def _hoi_stage(self, batch: list) -> list[FrameResult]:
        items = [x for x in batch if not isinstance(x, _End)]
        good = [x for x in items if isinstance(x, tuple)]
        results: dict[int, ImageResult | Skipped] = {}
        if good:
            results = self._score(good)
        out = []
        for item in items:
            if isinstance(item, Skipped):
                out.append(self._skipped(item))
                continue
            frame, dets = item
            r = results[frame.index]
            out.append(self._skipped(r) if isinstance(r, Skipped) else self._result(frame, dets, r))
        return out

    def _score(self, good: list[tuple[Frame, Detections]]) -> dict[int, ImageResult | Skipped]:
        """HOI results of a batch; if the batch is rejected, frame by frame, skipping those rejected alone."""
        try:
            return dict(zip([f.index for f, _ in good], self._hoi_call(good), strict=True))
        except (DetectionError, ImageInputError) as e:
            if len(good) == 1:
                f = good[0][0]
                return {f.index: Skipped(f.index, f.time_s, "hoi", str(e), f.size)}
        out = {}
        for item in good:
            out.update(self._score([item]))
        return out

    def _hoi_call(self, good: list[tuple[Frame, Detections]]) -> list[ImageResult]:
        frames = [f for f, _ in good]
        names = [f"frame {f.index}" for f in frames]
        t = time.perf_counter()
        inputs, sizes = self.hoi.prepare([f.image for f in frames], names)
        self.times.add("preprocess", time.perf_counter() - t, len(frames))
        t = time.perf_counter()
        results = self.hoi.detect_prepared(inputs, sizes, [d for _, d in good], names)
        self.times.add("hoi", time.perf_counter() - t, len(frames))
        return results

    def _result(self, frame: Frame, dets: Detections, r: ImageResult) -> FrameResult:
        human_id, object_id = _triplet_tracks(r, dets.track_ids)
        raw: dict[tuple[int, int, int], float] = {}
        for h, o, c, s in zip(human_id.tolist(), object_id.tolist(), r.hoi.tolist(), r.scores.tolist(), strict=True):
            if h >= 0 and o >= 0:
                raw[(h, o, c)] = max(s, raw.get((h, o, c), 0.0))
        events = self.events.update(frame.index, frame.time_s, self.smoother.update(raw))
        width, height = frame.size
        return FrameResult(
            frame.index,
            frame.time_s,
            width,
            height,
            image=frame.image if self.config.keep_images else None,
            detections=dets,
            hoi=r,
            human_id=human_id,
            object_id=object_id,
            events=events,
        )

    def _skipped(self, s: Skipped) -> FrameResult:
        self.skips.add(s)
        width, height = s.size if s.size is not None else (None, None)
        return FrameResult(s.index, s.time_s, width, height, skipped=s)


def _triplet_tracks(r: ImageResult, track_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Track ids of each triplet's human and object box, [K] int64 each."""
    if len(r) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    pair = r.pair
    kept = r.pairs.kept
    return track_ids[kept[r.pairs.human[pair]].numpy()], track_ids[kept[r.pairs.object[pair]].numpy()]


def _take_batch(q: queue.Queue, size: int, max_latency_ms: float, stop: threading.Event) -> tuple[list, bool]:
    """Up to ``size`` items: the first waited for, the rest until ``max_latency_ms`` after it.
    → (items, whether the stream ended: an ``_End`` or a ``_Failure`` is the last item)."""
    items: list = []
    deadline = None
    while len(items) < size and not stop.is_set():
        timeout = 0.1 if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            item = q.get(timeout=timeout) if timeout > 0 else q.get_nowait()
        except queue.Empty:
            if deadline is None:
                continue
            break
        items.append(item)
        if isinstance(item, (_End, _Failure)):
            return items, True
        if deadline is None:
            deadline = time.monotonic() + max_latency_ms / 1e3
    return items, stop.is_set()


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put ``item``, waiting for room; False when the stream was stopped first."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _drain(q: queue.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return
