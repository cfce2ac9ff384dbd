"""The records that flow through the video pipeline: frames, skipped frames, per-frame results.

Frame images are either H×W×3 uint8 RGB numpy arrays (what decoding gives) or [3, H, W] tensors
(uint8, or float in [0, 1]) on any device (frames already on a GPU stay there). A frame's object
detections are a ``defr.detections.Detections`` (boxes in pixels of the original frame, HICO labels,
track ids once tracked).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from defr.detections import Detections
from defr.runtime import ImageResult

FrameImage = np.ndarray | torch.Tensor


@dataclass
class Frame:
    """One decoded frame: its number in the source, its time in seconds and its pixels."""

    index: int
    time_s: float
    image: FrameImage

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return image_size(self.image)


@dataclass
class Skipped:
    """A frame that could not be used: the stage that gave up on it and why (counted in the summary)."""

    index: int
    time_s: float
    stage: str  # "decode", "detect", "hoi"
    reason: str
    size: tuple[int, int] | None = None  # (width, height) when known


@dataclass
class Interaction:
    """A closed interaction event: one HOI class between a human track and an object track over a span."""

    human_id: int
    object_id: int
    hoi: int  # class index of the HOI model
    verb: str
    object: str
    start_frame: int
    end_frame: int  # inclusive
    start_s: float
    end_s: float
    peak_score: float  # highest smoothed score during the event

    def to_json(self) -> dict:
        return {
            "human_id": self.human_id,
            "object_id": self.object_id,
            "hoi": self.hoi,
            "verb": self.verb,
            "object": self.object,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "start_s": round(self.start_s, 6),
            "end_s": round(self.end_s, 6),
            "peak_score": round(self.peak_score, 6),
        }


@dataclass
class FrameResult:
    """What the stream yields per frame, in frame order.

    A skipped frame has ``skipped`` set, no image and no results. Otherwise ``hoi`` holds the frame's
    triplets (best first) and ``human_id`` / ``object_id`` [K] the track id of each triplet's human
    and object (-1 where the box is not tracked yet); ``events`` are the events that closed at it.
    """

    index: int
    time_s: float
    width: int | None
    height: int | None
    image: FrameImage | None = field(default=None, repr=False)
    detections: Detections | None = None
    hoi: ImageResult | None = field(default=None, repr=False)
    human_id: np.ndarray | None = None  # [K] int64
    object_id: np.ndarray | None = None  # [K] int64
    events: list[Interaction] = field(default_factory=list)
    skipped: Skipped | None = None

    def to_json(self) -> dict:
        """The per-frame JSONL line: the results format plus track ids and frame time."""
        line = {"frame": self.index, "time_s": round(self.time_s, 6), "width": self.width, "height": self.height}
        if self.hoi is None:
            line.update(boxes_h=[], boxes_o=[], hoi=[], scores=[], human_id=[], object_id=[])
        else:
            line.update(self.hoi.to_json())
            line.update(human_id=self.human_id.tolist(), object_id=self.object_id.tolist())
        if self.skipped is not None:
            line["skipped"] = {"stage": self.skipped.stage, "reason": self.skipped.reason}
        return line


def image_size(image: FrameImage) -> tuple[int, int]:
    """(width, height) of a frame image."""
    if isinstance(image, torch.Tensor):
        return int(image.shape[-1]), int(image.shape[-2])
    return int(image.shape[1]), int(image.shape[0])


def as_numpy(image: FrameImage) -> np.ndarray:
    """H×W×3 uint8 RGB (tensors are copied to the CPU; float values in [0, 1] are scaled to 0..255)."""
    if isinstance(image, np.ndarray):
        return image
    x = image.detach()
    if x.is_floating_point():
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return np.ascontiguousarray(x.permute(1, 2, 0).cpu().numpy())


def as_tensor(image: FrameImage, device: str | torch.device | None = None) -> torch.Tensor:
    """[3, H, W] float32 in [0, 1] on ``device`` (the frame's own device when None)."""
    x = torch.from_numpy(image).permute(2, 0, 1) if isinstance(image, np.ndarray) else image
    x = x.to(device) if device is not None else x
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()
