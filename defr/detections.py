"""``Detections``: the object detections of one image or frame, the one typed record every entry point makes.

Contract (checked once, when a ``Detections`` is made; the arrays are then read-only, so it stays valid):

- ``boxes`` [N, 4] float32: (x1, y1, x2, y2) in pixels of the image the detector saw, finite, not
  inverted (x2 >= x1, y2 >= y1; zero-size boxes are allowed);
- ``labels`` [N] int64: HICO objects, whole numbers in 0..79 (person = 49);
- ``scores`` [N] float32: finite, in [0, 1];
- ``track_ids`` [N] int64 or None: whole numbers >= -1 (-1: not tracked).

Inputs may be Python lists, numpy arrays or torch tensors; all three give the same record or the same
error. Booleans (``True``, numpy bool arrays), strings (``"22"``, numpy string arrays), ragged lists and
non-numbers are refused, never parsed. Every refusal is a ``DetectionError`` (a ``ValueError``) whose
message names the image or frame (``name``), the field and the detection index.

Label spaces (``LABEL_SPACES``, default ``DEFAULT_LABEL_SPACE``): ``hico`` (HICO's 80 objects),
``coco80`` (0-based contiguous COCO indices, Ultralytics' convention) and ``coco91`` (COCO category
ids 1..90, torchvision's). ``to_hico_labels`` is the one conversion, with one policy for labels the
space does not map (COCO ids that are no object: torchvision's "N/A" slots, background 0, anything out
of range): they are refused with a message naming the label and its index, never dropped silently —
a detector that emits them must have them removed or mapped by its caller.

Bounds: ``check_bounds(width, height)`` refuses boxes that leave the decoded image by more than a small
tolerance. The usual cause is EXIF orientation: a detector that applied it gives boxes in the rotated
frame. ``in_image=False`` marks synthetic boxes that may leave the image on purpose (the noisy
ground-truth boxes of a box-noise study); those are not checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from defr import vocab
from defr.errors import ConfigError, DefrError
from defr.typecheck import json_numbers

LabelSpace = Literal["hico", "coco80", "coco91"]
LABEL_SPACES: tuple[str, ...] = ("hico", "coco80", "coco91")
DEFAULT_LABEL_SPACE: LabelSpace = "hico"
DETECTION_KEYS = ("boxes", "labels", "scores")
# A box may leave the image by this fraction of the image's side (and always by 1 px: 1-based
# inclusive boxes end at W, detectors round); EXIF-rotated boxes leave it by 33 % (4:3) or more.
BOUNDS_TOLERANCE = 0.02


class DetectionError(DefrError, ValueError):
    """Detections that cannot be used: the message names the image or frame, the field and the detection."""


def check_label_space(label_space: str) -> str:
    """``label_space`` if it is one of ``LABEL_SPACES``; ConfigError otherwise."""
    if label_space not in LABEL_SPACES:
        raise ConfigError(f"label space must be one of {', '.join(LABEL_SPACES)}, not {label_space!r}")
    return label_space


def _coco_table(label_space: str) -> dict[int, int]:
    hico = vocab.hico()
    return hico.coco80_to_hico if label_space == "coco80" else hico.coco91_to_hico


def to_hico_labels(labels, label_space: str = DEFAULT_LABEL_SPACE, name: str = "detections") -> np.ndarray:
    """Labels [N] in ``label_space`` → HICO objects [N] int64 (``hico``: checked and returned as is).

    Labels must be whole numbers; a label the space does not map raises ``DetectionError`` naming the
    label and its index (module docstring: unknown labels are refused, not dropped).
    """
    check_label_space(label_space)
    values = _whole(_numbers(labels, name, "labels"), name, "labels")
    if label_space == DEFAULT_LABEL_SPACE:
        return values
    table = _coco_table(label_space)
    flat = values.reshape(-1).tolist()
    unknown = [i for i, x in enumerate(flat) if x not in table]
    if unknown:
        i = unknown[0]
        raise DetectionError(
            f"{name}: label {flat[i]} at detection {i} is not a {label_space} object label "
            f"({len(unknown)} such; {label_space} objects: {_describe(table)}); "
            "remove or map such detections before passing them (they are not dropped silently)"
        )
    return np.array([table[x] for x in flat], dtype=np.int64).reshape(values.shape)


@dataclass(frozen=True, eq=False)
class Detections:
    """Object detections of one image or frame (module docstring: the contract, checked on construction).

    Args:
        boxes: [N, 4] (x1, y1, x2, y2) pixels of the image the detector saw.
        labels: [N] HICO objects 0..79 (other label spaces: ``from_dict`` / ``from_label_space``).
        scores: [N] in [0, 1].
        track_ids: [N] track ids (-1: not tracked), or None.
        name: the image or frame, for error messages.
        in_image: False for synthetic boxes that may leave the image on purpose (not bounds-checked).

    Raises:
        DetectionError: naming ``name``, the field and the detection, for anything off the contract.
    """

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    track_ids: np.ndarray | None = None
    name: str = field(default="detections", repr=False)
    in_image: bool = field(default=True, repr=False)

    def __post_init__(self) -> None:
        name = self.name
        boxes = _numbers(self.boxes, name, "boxes")
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise DetectionError(f"{name}: boxes must have shape [N, 4] (x1, y1, x2, y2), got {list(boxes.shape)}")
        n = boxes.shape[0]
        labels = _numbers(self.labels, name, "labels")
        scores = _numbers(self.scores, name, "scores")
        ids = None if self.track_ids is None else _numbers(self.track_ids, name, "track_ids")
        shapes = {"labels": labels, "scores": scores, **({} if ids is None else {"track_ids": ids})}
        wrong = {k: list(v.shape) for k, v in shapes.items() if v.shape != (n,) and not (n == 0 and v.size == 0)}
        if wrong:
            raise DetectionError(f"{name}: {n} boxes but {', '.join(f'{k} of shape {s}' for k, s in wrong.items())}")
        labels, ids = labels.reshape(n), None if ids is None else ids.reshape(n)
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused just below
            boxes32, scores32 = boxes.astype(np.float32), scores.reshape(n).astype(np.float32)
        for key, values in (("boxes", boxes32), ("scores", scores32), ("labels", labels), ("track_ids", ids)):
            if values is not None:
                bad = ~np.isfinite(values) if values.ndim == 1 else ~np.isfinite(values).all(axis=1)
                if bad.any():
                    raise DetectionError(
                        f"{name}: {key} has NaN or inf (or a value beyond float32) at detection(s) {_first(bad)}"
                    )
        out_of_range = (scores32 < 0) | (scores32 > 1)
        if out_of_range.any():
            raise DetectionError(
                f"{name}: scores must be in [0, 1], got {scores32[out_of_range][:8].tolist()} "
                f"at detection(s) {_first(out_of_range)}"
            )
        inverted = (boxes32[:, 2] < boxes32[:, 0]) | (boxes32[:, 3] < boxes32[:, 1])
        if inverted.any():
            i = int(np.flatnonzero(inverted)[0])
            raise DetectionError(
                f"{name}: inverted box(es) (x2 < x1 or y2 < y1) at detection(s) {_first(inverted)}, "
                f"e.g. {boxes32[i].tolist()}; boxes are (x1, y1, x2, y2)"
            )
        labels = _whole(labels, name, "labels")
        bad = (labels < 0) | (labels >= vocab.NUM_OBJECTS)
        if bad.any():
            raise DetectionError(
                f"{name}: labels must be HICO objects, integers in 0..{vocab.NUM_OBJECTS - 1}; got "
                f"{labels[bad][:8].tolist()} at detection(s) {_first(bad)} (COCO labels: give the label space)"
            )
        if ids is not None:
            ids = _whole(ids, name, "track_ids")
            if (ids < -1).any():
                raise DetectionError(f"{name}: track_ids must be >= -1 (-1: not tracked), got {ids.min()}")
        for key, values in (("boxes", boxes32), ("labels", labels), ("scores", scores32), ("track_ids", ids)):
            if values is not None:
                values.flags.writeable = False
            object.__setattr__(self, key, values)

    @classmethod
    def from_label_space(
        cls,
        boxes,
        labels,
        scores,
        label_space: str = DEFAULT_LABEL_SPACE,
        track_ids=None,
        name: str = "detections",
        in_image: bool = True,
    ) -> Detections:
        """Detections whose labels are in ``label_space``, converted with ``to_hico_labels``."""
        return cls(boxes, to_hico_labels(labels, label_space, name), scores, track_ids, name, in_image)

    @classmethod
    def from_dict(cls, entry, label_space: str = DEFAULT_LABEL_SPACE, name: str = "detections") -> Detections:
        """``{"boxes", "labels", "scores"[, "track_ids"]}`` (the detections files' and ``HOIDetector.detect``'s
        shape; other keys are ignored) → Detections, labels converted from ``label_space``."""
        if not isinstance(entry, Mapping):
            raise DetectionError(
                f"{name}: detections must be a dict with {', '.join(DETECTION_KEYS)}, not {type(entry).__name__}"
            )
        missing = [k for k in DETECTION_KEYS if k not in entry]
        if missing:
            raise DetectionError(f"{name}: detections lack {missing} (need {', '.join(DETECTION_KEYS)})")
        boxes, labels, scores = (entry[k] for k in DETECTION_KEYS)
        return cls.from_label_space(boxes, labels, scores, label_space, entry.get("track_ids"), name)

    @classmethod
    def empty(cls, name: str = "detections") -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32), name=name)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def to_dict(self) -> dict:
        """The JSON form: ``{"boxes": [[x1, y1, x2, y2], ...], "labels": [...], "scores": [...]}`` (+ track_ids)."""
        out = {"boxes": self.boxes.tolist(), "labels": self.labels.tolist(), "scores": self.scores.tolist()}
        if self.track_ids is not None:
            out["track_ids"] = self.track_ids.tolist()
        return out

    def select(self, keep) -> Detections:
        """The detections at ``keep`` ([N] bool mask or indices), in that order."""
        ids = None if self.track_ids is None else self.track_ids[keep]
        return Detections(self.boxes[keep], self.labels[keep], self.scores[keep], ids, self.name, self.in_image)

    def with_track_ids(self, track_ids) -> Detections:
        """The same detections with ``track_ids`` [N]."""
        return Detections(self.boxes, self.labels, self.scores, track_ids, self.name, self.in_image)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(boxes [N, 4] float32, labels [N] int64, scores [N] float32) CPU tensors (copies) for the runtime."""
        return (
            torch.from_numpy(self.boxes.copy()),
            torch.from_numpy(self.labels.copy()),
            torch.from_numpy(self.scores.copy()),
        )

    def check_bounds(
        self, width: int, height: int, tolerance: float = BOUNDS_TOLERANCE, name: str | None = None
    ) -> None:
        """DetectionError (naming ``name``, default the record's) if a box leaves the ``width`` × ``height``
        image by more than ``tolerance`` of its side (and 1 px); detections with ``in_image=False`` are not
        checked."""
        if not self.in_image or len(self) == 0:
            return
        mx, my = max(1.0, tolerance * width), max(1.0, tolerance * height)
        b = self.boxes
        outside = (b[:, 0] < -mx) | (b[:, 1] < -my) | (b[:, 2] > width + mx) | (b[:, 3] > height + my)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise DetectionError(
                f"{name or self.name}: box(es) at detection(s) {_first(outside)} (e.g. {b[i].tolist()}) lie "
                f"outside the decoded {width}×{height} image by more than {tolerance:.0%}; boxes must be in "
                "pixels of the image as defr decodes it (a common cause is EXIF orientation: the detector saw "
                "the image rotated by its EXIF tag and this decode did not, or the reverse; see docs/detection.md, "
                "Detections)"
            )


def box_iou_inclusive(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes (x1, y1, x2, y2) in inclusive pixels, areas (x2 - x1 + 1)·(y2 - y1 + 1) (HICO-DET's rule):
    a, b: [K, 4] row against row, or [4] against [K, 4] (broadcast) → [K]; 0 where they do not overlap."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
    overlaps = (iw > 0) & (ih > 0)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    return np.divide(inter, area_a + area_b - inter, out=np.zeros(iw.shape), where=overlaps)


def check_boxes(value, name: str, key: str = "boxes") -> np.ndarray:
    """``value`` as boxes [N, 4] float64 under the box rules above (numbers, four a box, finite, not inverted),
    for records that carry boxes without labels or scores (a video run's pair boxes); DetectionError naming
    ``name`` and ``key`` otherwise."""
    boxes = _numbers(value, name, key)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DetectionError(f"{name}: {key} must have shape [N, 4] (x1, y1, x2, y2), got {list(boxes.shape)}")
    bad = ~np.isfinite(boxes).all(axis=1) | (np.abs(boxes) > np.finfo(np.float32).max).any(axis=1)
    if bad.any():
        raise DetectionError(f"{name}: {key} has NaN or inf (or a value beyond float32) at {_first(bad)}")
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inverted.any():
        i = int(np.flatnonzero(inverted)[0])
        raise DetectionError(f"{name}: {key}[{i}] = {boxes[i].tolist()} is inverted (x2 < x1 or y2 < y1)")
    return boxes


def whole_numbers(value, name: str, key: str, low: int | None = None) -> np.ndarray:
    """``value`` (a list of numbers) as int64 [N] if every entry is a whole number (``>= low`` when given);
    DetectionError naming ``name``, ``key`` and the first that is not."""
    values = _whole(_numbers(value, name, key), name, key).reshape(-1)
    if low is not None and (values < low).any():
        raise DetectionError(f"{name}: {key} must be >= {low}, got {int(values.min())}")
    return values


def finite_numbers(value, name: str, key: str) -> np.ndarray:
    """``value`` (a list of numbers) as float64 [N], finite; DetectionError naming ``name`` and ``key`` otherwise."""
    values = _numbers(value, name, key).reshape(-1).astype(np.float64)
    if not np.isfinite(values).all():
        raise DetectionError(f"{name}: {key} has NaN or inf at {_first(~np.isfinite(values))}")
    return values


def as_detections(value, label_space: str = DEFAULT_LABEL_SPACE, name: str = "detections") -> Detections:
    """A ``Detections`` as is, or a dict (``Detections.from_dict``) in ``label_space``."""
    if isinstance(value, Detections):
        return value
    return Detections.from_dict(value, label_space, name)


def _numbers(value: Any, name: str, key: str) -> np.ndarray:
    """A list / numpy array / torch tensor of real numbers → float64 array (int64 kept for integer arrays);
    DetectionError for booleans, strings, complex numbers, ragged or non-numeric input."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.dtype == torch.bool or t.is_complex():
            raise DetectionError(f"{name}: {key} must be real numbers, got a {t.dtype} tensor")
        value = t.numpy() if not t.is_floating_point() else t.double().numpy()
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O":
            value = value.tolist()
        elif value.dtype.kind in "iu":
            return value.astype(np.int64)
        elif value.dtype.kind == "f":
            return value.astype(np.float64)
        elif value.size:
            raise DetectionError(f"{name}: {key} must be real numbers, got a numpy {value.dtype} array")
        else:
            return np.zeros(value.shape, np.float64)
    if not isinstance(value, (list, tuple)):
        raise DetectionError(f"{name}: {key} must be a list, array or tensor of numbers, not {type(value).__name__}")
    json_numbers(value, f"{name}: {key}", error=DetectionError)
    try:
        return np.asarray(value, dtype=np.float64)
    except (ValueError, OverflowError) as e:
        raise DetectionError(f"{name}: {key} is not a rectangular array of numbers ({e})") from None


def _whole(values: np.ndarray, name: str, key: str) -> np.ndarray:
    """int64 of ``values`` if they are all whole, finite numbers; DetectionError naming the first that is not."""
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    flat = values.reshape(-1)
    bad = ~np.isfinite(flat) | (flat != np.round(flat)) | (np.abs(flat) >= 2.0**62)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DetectionError(f"{name}: {key} must be whole numbers, got {float(flat[i])!r} at detection {i}")
    return values.astype(np.int64)


def _describe(table: dict[int, int]) -> str:
    ids = sorted(table)
    gaps = sorted(set(range(ids[0], ids[-1] + 1)) - set(ids))
    return f"{ids[0]}..{ids[-1]}" + (f" except {', '.join(map(str, gaps))}" if gaps else "")


def _first(mask: np.ndarray, k: int = 8) -> list[int]:
    return np.flatnonzero(mask)[:k].tolist()
