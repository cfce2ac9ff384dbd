"""Builders shared by the video tests: a tiny HOI detector, oracle detectors, synthetic frames and videos."""

from __future__ import annotations

import numpy as np
import torch

from defr import vocab
from defr.detections import Detections


def tiny_hoi(image_size: int = 64, **kw):
    """A random tiny-vit HOIDetector (600 HICO classes) on the CPU."""
    from defr.model import create_model
    from defr.runtime import HOIDetector, TorchBackend

    backend = TorchBackend(create_model("tiny-vit", image_size, seed=0))
    return HOIDetector(backend, backend.meta, **kw)


def frames(n: int, size: tuple[int, int] = (96, 72), seed: int = 0) -> list[np.ndarray]:
    """``n`` random H×W×3 uint8 frames of ``size`` (W, H)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(n)]


def person_and_ball(shift: float = 0.0) -> Detections:
    """One human and one sports ball (HICO 37), boxes moving right by ``shift`` pixels."""
    ball = vocab.hico().objects.index("sports_ball")
    return Detections(
        [[10 + shift, 8, 40 + shift, 60], [42 + shift, 40, 58 + shift, 56]], [vocab.PERSON, ball], [0.95, 0.9]
    )


class Oracle:
    """An ObjectDetector returning ``person_and_ball`` moving 1 px a frame; records the batches it saw.
    ``nan_frames``: frames whose output has a NaN box (the detector raises ``DetectionError`` making it)."""

    def __init__(self, nan_frames=()):
        self.batches: list[list[int]] = []
        self.nan_frames = set(nan_frames)

    def __call__(self, images, indices):
        self.batches.append(list(indices))
        out = []
        for i in indices:
            d = person_and_ball(float(i))
            if i in self.nan_frames:
                boxes = d.boxes.copy()
                boxes[0, 0] = np.nan
                d = Detections(boxes, d.labels, d.scores, name=f"frame {i}")
            out.append(d)
        return out


def as_tensor_frame(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frame).permute(2, 0, 1).contiguous()
