"""Object detectors behind one protocol: frames → ``Detections`` (HICO labels, each frame's pixels).

``ObjectDetector`` is what the pipeline calls, once per batch of frames. Adapters:

- ``TorchvisionDetector``: a torchvision detection model (labels: COCO category ids, ``coco91``);
  ``build_torchvision_detector(name, weights)`` builds one from local weights only.
- ``UltralyticsDetector``: an Ultralytics YOLO model or anything called like one (returns Results
  with ``boxes.xyxy``, ``boxes.cls``, ``boxes.conf``; labels: 0-based COCO, ``coco80``). Frames are
  handed over as BGR arrays, Ultralytics' convention for numpy input.
- ``SupervisionDetector``: a callback frame → ``supervision.Detections`` (``xyxy``, ``class_id``,
  ``confidence``).
- ``PrecomputedDetector``: detections per frame known in advance; ``from_file`` reads them with
  ``defr.runtime.io.load_frame_detections`` (the reader ``defr detect``'s files go through: the same
  rules, the same refusals). Every frame needs an entry (empty lists where nothing was found).

Every adapter's output becomes a ``defr.detections.Detections`` (``Detections.from_label_space``: the
one COCO → HICO conversion; a label the space does not map is refused, not dropped). An output that
breaks the contract (NaN, inverted boxes, ...) raises ``DetectionError`` naming the frame; the
pipeline then skips that frame and counts it. ``make_detector`` parses the CLI's
``torchvision:NAME``, ``ultralytics:WEIGHTS`` and ``detections:FILE``.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from defr.detections import DEFAULT_LABEL_SPACE, Detections
from defr.errors import ConfigError
from defr.optional import import_ultralytics
from defr.runtime.io import load_frame_detections
from defr.video.errors import VideoError
from defr.video.records import FrameImage, as_numpy, as_tensor

DETECTOR_KINDS = ("torchvision", "ultralytics", "detections")
DEFAULT_DETECTOR = "torchvision:fasterrcnn_resnet50_fpn"


class ObjectDetector(Protocol):
    def __call__(self, frames: Sequence[FrameImage], indices: Sequence[int]) -> list[Detections]:
        """frames: B frame images; indices: their frame numbers → B detections (HICO labels, frame pixels)."""


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class TorchvisionDetector:
    """A torchvision detection model (``model(list of [3, H, W] float) → [{"boxes", "labels", "scores"}]``).

    device: where the model runs (frames are moved there); label_space: its labels (``coco91`` for
    torchvision's COCO weights); min_score: drop detections below it before pairing.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device = "cpu",
        label_space: str = "coco91",
        min_score: float = 0.0,
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.label_space = label_space
        self.min_score = min_score

    @torch.inference_mode()
    def __call__(self, frames: Sequence[FrameImage], indices: Sequence[int]) -> list[Detections]:
        outputs = self.model([as_tensor(f, self.device) for f in frames])
        dets = []
        for o, i in zip(outputs, indices, strict=True):
            keep = o["scores"] >= self.min_score
            boxes, labels, scores = (_np(o[k][keep]) for k in ("boxes", "labels", "scores"))
            dets.append(Detections.from_label_space(boxes, labels, scores, self.label_space, name=f"frame {i}"))
        return dets


def torchvision_weights_file(name: str) -> tuple[Path, str]:
    """(where torch's cache keeps the default weights of detection model ``name``, their URL)."""
    import torchvision

    url = torchvision.models.get_model_weights(name).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def build_torchvision_detector(
    name: str, weights: str | os.PathLike | None = None, device: str = "cpu", min_score: float = 0.0, **model_kw
) -> TorchvisionDetector:
    """torchvision detection model ``name`` with COCO weights from ``weights`` or torch's local cache.

    Nothing is downloaded: without a weights file, ``VideoError`` says where to put one.
    ``model_kw`` go to the model builder (e.g. ``min_size``, ``box_score_thresh``).
    """
    import torchvision
    from torchvision.models import detection

    names = torchvision.models.list_models(module=detection)
    if name not in names:
        raise ConfigError(f"unknown torchvision detection model {name!r}; one of: {', '.join(names)}")
    if weights is None:
        cached, url = torchvision_weights_file(name)
        if not cached.is_file():
            raise VideoError(
                f"torchvision:{name} needs its COCO weights and none are in the local cache ({cached}); "
                f"download {url} and pass --detector-weights PATH (or put the file at {cached})"
            )
        weights = cached
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, **model_kw)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (OSError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VideoError(f"{weights}: not weights of torchvision:{name} ({first})") from None
    return TorchvisionDetector(model, device=device, min_score=min_score)


class UltralyticsDetector:
    """An Ultralytics YOLO model, or any callable with its call shape: ``model(list of H×W×3 BGR uint8,
    verbose=False) → [Results]`` with ``r.boxes.xyxy`` [N, 4], ``r.boxes.cls`` [N], ``r.boxes.conf`` [N]."""

    def __init__(self, model: Callable, label_space: str = "coco80"):
        self.model, self.label_space = model, label_space

    def __call__(self, frames: Sequence[FrameImage], indices: Sequence[int]) -> list[Detections]:
        bgr = [np.ascontiguousarray(as_numpy(f)[..., ::-1]) for f in frames]
        results = self.model(bgr, verbose=False)
        return [
            detections_from_ultralytics(r, self.label_space, f"frame {i}")
            for r, i in zip(results, indices, strict=True)
        ]


def detections_from_ultralytics(result, label_space: str = "coco80", name: str = "frame") -> Detections:
    """One Ultralytics ``Results`` (``boxes.xyxy``, ``boxes.cls``, ``boxes.conf``) → HICO detections."""
    boxes = result.boxes
    return Detections.from_label_space(_np(boxes.xyxy), _np(boxes.cls), _np(boxes.conf), label_space, name=name)


def load_ultralytics_detector(weights: str, label_space: str = "coco80") -> UltralyticsDetector:
    """``ultralytics.YOLO(weights)`` as a detector (needs ``pip install ultralytics``)."""
    return UltralyticsDetector(import_ultralytics().YOLO(weights), label_space)


class SupervisionDetector:
    """A callback frame (H×W×3 uint8 RGB) → ``supervision.Detections`` (``xyxy``, ``class_id``, ``confidence``)."""

    def __init__(self, callback: Callable, label_space: str = "coco80"):
        self.callback, self.label_space = callback, label_space

    def __call__(self, frames: Sequence[FrameImage], indices: Sequence[int]) -> list[Detections]:
        return [
            detections_from_supervision(self.callback(as_numpy(f)), self.label_space, f"frame {i}")
            for f, i in zip(frames, indices, strict=True)
        ]


def detections_from_supervision(detections, label_space: str = "coco80", name: str = "frame") -> Detections:
    """``supervision.Detections`` → HICO detections; no ``confidence`` means 1, no ``class_id`` is an error."""
    if detections.class_id is None:
        raise VideoError("supervision Detections without class_id: the HOI model needs object classes")
    n = len(detections)
    scores = np.ones(n, dtype=np.float32) if detections.confidence is None else detections.confidence
    return Detections.from_label_space(detections.xyxy, detections.class_id, scores, label_space, name=name)


class PrecomputedDetector:
    """Detections known in advance, ``{frame: Detections}``; ``name`` (the file) is what errors cite.
    ``PrecomputedDetector.from_file`` reads them from a JSONL or JSON file keyed by frame number."""

    def __init__(self, by_frame: dict[int, Detections], name: str = "detections"):
        self.by_frame, self.name = dict(by_frame), name

    @classmethod
    def from_file(cls, path: str | os.PathLike, label_space: str = DEFAULT_LABEL_SPACE) -> PrecomputedDetector:
        """The detections of a file (``defr.runtime.io.load_frame_detections``), labels in ``label_space``."""
        return cls(load_frame_detections(Path(path), label_space), str(path))

    def __call__(self, frames: Sequence[FrameImage], indices: Sequence[int]) -> list[Detections]:
        out = []
        for i in indices:
            if i not in self.by_frame:
                covered = f"frames {min(self.by_frame)}..{max(self.by_frame)}" if self.by_frame else "no frame"
                raise VideoError(
                    f"{self.name}: no detections for frame {i} (the file covers {covered}); "
                    "write an entry with empty lists for frames without detections"
                )
            out.append(self.by_frame[i])
        return out


def make_detector(
    spec: str, device: str = "cpu", weights: str | os.PathLike | None = None, label_space: str | None = None
) -> ObjectDetector:
    """A detector from ``torchvision:NAME``, ``ultralytics:WEIGHTS`` or ``detections:FILE``.

    weights: the torchvision model's weights file (else torch's cache); label_space: of a detections
    file (default ``hico``) or of a YOLO model (default ``coco80``).
    """
    kind, sep, value = spec.partition(":")
    if not sep or kind not in DETECTOR_KINDS or not value:
        raise ConfigError(
            f"detector must be one of torchvision:NAME, ultralytics:WEIGHTS, detections:FILE; got {spec!r}"
        )
    if weights is not None and kind != "torchvision":
        raise ConfigError("--detector-weights applies to torchvision:NAME detectors only")
    if kind == "torchvision":
        return build_torchvision_detector(value, weights, device=device)
    if kind == "ultralytics":
        return load_ultralytics_detector(value, label_space or "coco80")
    return PrecomputedDetector.from_file(value, label_space or DEFAULT_LABEL_SPACE)
