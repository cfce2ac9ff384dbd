"""Track ids for detected boxes: ByteTrack (Roboflow's ``trackers``, the successor of supervision's), one per label.

Each HICO object label gets its own ByteTrack instance, so a ball never takes over a person's id;
ids are unique across labels (``1, 2, ...`` in order of confirmation). A box gets ``-1`` until its
track is confirmed (``min_frames`` consecutive matches; with 1, from its second frame on) and when
ByteTrack leaves it unmatched. Frames must be given in order; skipped frames are simply not given
(ByteTrack then treats the gap as one frame).

Memory stays bounded on an endless stream: the id table keeps only tracks ByteTrack still holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from defr.detections import Detections
from defr.errors import ConfigError
from defr.optional import import_supervision, import_trackers


@dataclass
class TrackerConfig:
    """ByteTrack settings (its names); frame_rate defaults to the source's."""

    lost_track_buffer: int = 30  # frames (at 30 fps) a lost track is kept for re-association
    activation_threshold: float = 0.5  # detection score that starts a track
    high_threshold: float = 0.5  # ByteTrack's split between its first (high) and second (low) association
    min_iou: float = 0.1  # IoU between a track's prediction and a box to match them
    min_frames: int = 1  # consecutive matches before a track gets an id

    def __post_init__(self) -> None:
        if self.lost_track_buffer < 0:
            raise ConfigError(f"lost_track_buffer must be >= 0 frames, not {self.lost_track_buffer}")
        for name in ("activation_threshold", "high_threshold", "min_iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"tracker {name} must be in [0, 1], not {getattr(self, name)}")
        if self.min_frames < 1:
            raise ConfigError(f"tracker min_frames must be >= 1, not {self.min_frames}")


class ObjectTracker:
    """Per-frame detections → track ids [N] (int64, -1: not tracked); one ByteTrack per HICO label."""

    def __init__(self, config: TrackerConfig | None = None, frame_rate: float = 30.0):
        self.config = config or TrackerConfig()
        self.frame_rate = frame_rate
        self._bytetrack = import_trackers().ByteTrackTracker
        self._sv = import_supervision()
        self._trackers: dict[int, object] = {}
        self._ids: dict[int, dict[int, int]] = {}  # label → {ByteTrack's id: our id}
        self._next_id = 1

    def _tracker(self, label: int):
        if label not in self._trackers:
            c = self.config
            self._trackers[label] = self._bytetrack(
                lost_track_buffer=c.lost_track_buffer,
                frame_rate=self.frame_rate,
                track_activation_threshold=c.activation_threshold,
                minimum_consecutive_frames=c.min_frames,
                minimum_iou_threshold=c.min_iou,
                high_conf_det_threshold=c.high_threshold,
            )
        return self._trackers[label]

    def update(self, dets: Detections) -> np.ndarray:
        """Track ids of ``dets`` (one frame, in order), [N] int64; every label's tracker advances one frame."""
        ids = np.full(len(dets), -1, dtype=np.int64)
        for label in sorted(set(dets.labels.tolist()) | set(self._trackers)):
            rows = np.flatnonzero(dets.labels == label)
            boxes = self._sv.Detections(
                xyxy=dets.boxes[rows].astype(np.float32).reshape(-1, 4),
                confidence=dets.scores[rows].astype(np.float32),
                class_id=np.full(len(rows), label, dtype=int),
                data={"row": rows},
            )
            tracked = self._tracker(label).update(boxes)
            for row, local in zip(tracked.data.get("row", []), tracked.tracker_id, strict=True):
                if local >= 0:
                    ids[int(row)] = self._id(label, int(local))
            self._forget(label)
        return ids

    def _id(self, label: int, local: int) -> int:
        ids = self._ids.setdefault(label, {})
        if local not in ids:
            ids[local] = self._next_id
            self._next_id += 1
        return ids[local]

    def _forget(self, label: int) -> None:
        alive = {int(t.tracker_id) for t in self._trackers[label].tracks}
        ids = self._ids.get(label, {})
        for local in [k for k in ids if k not in alive]:
            del ids[local]
