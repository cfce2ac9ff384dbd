"""Object detectors behind one protocol: frames → boxes, HICO labels and scores in each frame's pixels.

``ObjectDetector`` is what the pipeline calls, once per batch of frames. Adapters:

- ``TorchvisionDetector``: a torchvision detection model (labels: COCO category ids, ``coco91``);
  ``build_torchvision_detector(name, weights)`` builds one from local weights only.
- ``UltralyticsDetector``: an Ultralytics YOLO model or anything called like one (returns Results
  with ``boxes.xyxy``, ``boxes.cls``, ``boxes.conf``; labels: 0-based COCO, ``coco80``). Frames are
  handed over as BGR arrays, Ultralytics' convention for numpy input.
- ``SupervisionDetector``: a callback frame → ``supervision.Detections`` (``xyxy``, ``class_id``,
  ``confidence``).
- ``PrecomputedDetector``: detections per frame from a file, JSONL (one ``{"frame", "boxes", "labels",
  "scores"}`` a line) or JSON (a list of such objects, or ``{"<frame>": {"boxes", ...}}``). Every frame
  needs an entry (empty lists where nothing was found).

COCO labels become HICO objects with ``defr.runtime.hico_labels_from_coco``; COCO ids that are not
objects (the background, torchvision's "N/A" slots) are dropped. ``make_detector`` parses the CLI's
``torchvision:NAME``, ``ultralytics:WEIGHTS`` and ``detections:FILE``. ``check_detections`` is the
contract an adapter's output must meet; a frame whose output fails it is skipped and counted.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from defr import vocab
from defr.errors import ConfigError
from defr.optional import import_ultralytics
from defr.runtime import hico_labels_from_coco
from defr.video.errors import DetectorError
from defr.video.records import FrameDetections, FrameImage, as_numpy, as_tensor

LABEL_SPACES = ("hico", "coco80", "coco91")
DETECTOR_KINDS = ("torchvision", "ultralytics", "detections")
DEFAULT_DETECTOR = "torchvision:fasterrcnn_resnet50_fpn"


class ObjectDetector(Protocol):
    def __call__(self, frames: Sequence[FrameImage], indices: Sequence[int]) -> list[FrameDetections]:
        """frames: B frame images; indices: their frame numbers → B detections (HICO labels, frame pixels)."""


def to_hico(boxes, labels, scores, label_space: str) -> FrameDetections:
    """Detections in ``label_space`` → HICO labels; labels the space does not map (N/A, background) dropped."""
    if label_space not in LABEL_SPACES:
        raise ConfigError(f"label space must be one of {LABEL_SPACES}, not {label_space!r}")
    boxes, labels, scores = _np(boxes).reshape(-1, 4), _np(labels).reshape(-1), _np(scores).reshape(-1)
    if label_space != "hico" and labels.size:
        table = vocab.hico().coco80_to_hico if label_space == "coco80" else vocab.hico().coco91_to_hico
        known = np.isin(labels, np.fromiter(table, dtype=np.int64))
        boxes, labels, scores = boxes[known], labels[known], scores[known]
        labels = hico_labels_from_coco(labels.astype(np.int64), label_space)
    return FrameDetections(boxes, labels, scores)


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def check_detections(dets: FrameDetections) -> str | None:
    """Why ``dets`` cannot be used, or None: non-finite values, inverted
    boxes, scores outside [0, 1], labels outside 0..79. Boxes partly outside the frame are allowed."""
    n = len(dets)
    if dets.labels.shape != (n,) or dets.scores.shape != (n,):
        return f"{n} boxes but {dets.labels.shape[0]} labels and {dets.scores.shape[0]} scores"
    bad = ~np.isfinite(dets.boxes).all(axis=1) | ~np.isfinite(dets.scores)
    if bad.any():
        return f"detector returned NaN or inf at detection(s) {np.flatnonzero(bad)[:8].tolist()}"
    if ((dets.boxes[:, 2] < dets.boxes[:, 0]) | (dets.boxes[:, 3] < dets.boxes[:, 1])).any():
        return "detector returned inverted boxes (x2 < x1 or y2 < y1)"
    if ((dets.scores < 0) | (dets.scores > 1)).any():
        return "detector returned scores outside [0, 1]"
    if ((dets.labels < 0) | (dets.labels >= vocab.NUM_OBJECTS)).any():
        return f"detector returned labels outside the HICO objects 0..{vocab.NUM_OBJECTS - 1}"
    return None


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
    def __call__(self, frames: Sequence[FrameImage], indices: Sequence[int]) -> list[FrameDetections]:
        outputs = self.model([as_tensor(f, self.device) for f in frames])
        dets = []
        for o in outputs:
            keep = o["scores"] >= self.min_score
            dets.append(to_hico(o["boxes"][keep], o["labels"][keep], o["scores"][keep], self.label_space))
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

    Nothing is downloaded: without a weights file, ``DetectorError`` says where to put one.
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
            raise DetectorError(
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
        raise DetectorError(f"{weights}: not weights of torchvision:{name} ({first})") from None
    return TorchvisionDetector(model, device=device, min_score=min_score)


class UltralyticsDetector:
    """An Ultralytics YOLO model, or any callable with its call shape: ``model(list of H×W×3 BGR uint8,
    verbose=False) → [Results]`` with ``r.boxes.xyxy`` [N, 4], ``r.boxes.cls`` [N], ``r.boxes.conf`` [N]."""

    def __init__(self, model: Callable, label_space: str = "coco80"):
        self.model, self.label_space = model, label_space

    def __call__(self, frames: Sequence[FrameImage], indices: Sequence[int]) -> list[FrameDetections]:
        bgr = [np.ascontiguousarray(as_numpy(f)[..., ::-1]) for f in frames]
        return [detections_from_ultralytics(r, self.label_space) for r in self.model(bgr, verbose=False)]


def detections_from_ultralytics(result, label_space: str = "coco80") -> FrameDetections:
    """One Ultralytics ``Results`` (``boxes.xyxy``, ``boxes.cls``, ``boxes.conf``) → HICO detections."""
    boxes = result.boxes
    return to_hico(boxes.xyxy, _np(boxes.cls).astype(np.int64), boxes.conf, label_space)


def load_ultralytics_detector(weights: str, label_space: str = "coco80") -> UltralyticsDetector:
    """``ultralytics.YOLO(weights)`` as a detector (needs ``pip install ultralytics``)."""
    return UltralyticsDetector(import_ultralytics().YOLO(weights), label_space)


class SupervisionDetector:
    """A callback frame (H×W×3 uint8 RGB) → ``supervision.Detections`` (``xyxy``, ``class_id``, ``confidence``)."""

    def __init__(self, callback: Callable, label_space: str = "coco80"):
        self.callback, self.label_space = callback, label_space

    def __call__(self, frames: Sequence[FrameImage], indices: Sequence[int]) -> list[FrameDetections]:
        return [detections_from_supervision(self.callback(as_numpy(f)), self.label_space) for f in frames]


def detections_from_supervision(detections, label_space: str = "coco80") -> FrameDetections:
    """``supervision.Detections`` → HICO detections; no ``confidence`` means 1, no ``class_id`` is an error."""
    if detections.class_id is None:
        raise DetectorError("supervision Detections without class_id: the HOI model needs object classes")
    n = len(detections)
    scores = np.ones(n, dtype=np.float32) if detections.confidence is None else detections.confidence
    return to_hico(detections.xyxy, detections.class_id, scores, label_space)


class PrecomputedDetector:
    """Detections read from a file (JSONL or JSON, keyed by frame number), in ``label_space``."""

    def __init__(self, path: str | os.PathLike, label_space: str = "hico"):
        self.path = Path(path)
        self.by_frame = read_detections(self.path, label_space)

    @classmethod
    def from_dict(cls, by_frame: dict[int, FrameDetections], name: str = "detections") -> PrecomputedDetector:
        """From detections already in memory, ``{frame: FrameDetections}`` in HICO labels."""
        self = cls.__new__(cls)
        self.path, self.by_frame = Path(name), dict(by_frame)
        return self

    def __call__(self, frames: Sequence[FrameImage], indices: Sequence[int]) -> list[FrameDetections]:
        out = []
        for i in indices:
            if i not in self.by_frame:
                covered = f"frames {min(self.by_frame)}..{max(self.by_frame)}" if self.by_frame else "no frame"
                raise DetectorError(
                    f"{self.path}: no detections for frame {i} (the file covers {covered}); "
                    "write an entry with empty lists for frames without detections"
                )
            out.append(self.by_frame[i])
        return out


def read_detections(path: Path, label_space: str = "hico") -> dict[int, FrameDetections]:
    """``{frame: FrameDetections}`` from a JSONL or JSON detections file; ``DetectorError`` names the line."""
    try:
        text = path.read_text()
    except OSError as e:
        raise DetectorError(f"{path}: cannot read detections ({e.strerror or e})") from None
    entries: list[tuple[str, dict]] = []
    try:
        if path.suffix.lower() == ".jsonl":
            entries = [(f"line {n}", json.loads(line)) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        else:
            data = json.loads(text)
            if isinstance(data, dict):
                entries = [(f"frame {k}", {**v, "frame": int(k)}) for k, v in data.items()]
            elif isinstance(data, list):
                entries = [(f"entry {n}", e) for n, e in enumerate(data)]
            else:
                raise DetectorError(f"{path}: expected a list of frames or an object keyed by frame number")
    except (json.JSONDecodeError, ValueError, TypeError, AttributeError) as e:
        raise DetectorError(f"{path}: not a detections file ({e})") from None
    out: dict[int, FrameDetections] = {}
    for where, entry in entries:
        if not isinstance(entry, dict) or any(k not in entry for k in ("frame", "boxes", "labels", "scores")):
            raise DetectorError(f"{path}, {where}: needs 'frame', 'boxes', 'labels' and 'scores'")
        try:
            dets = to_hico(entry["boxes"], entry["labels"], entry["scores"], label_space)
            frame = int(entry["frame"])
        except (ValueError, TypeError) as e:
            raise DetectorError(f"{path}, {where}: {e}") from None
        if frame in out:
            raise DetectorError(f"{path}, {where}: frame {frame} appears twice")
        out[frame] = dets
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
    return PrecomputedDetector(value, label_space or "hico")
