"""Detections → human–object pairs → per-class priors, with the released pipeline's rules.

Rules (all in ``PairConfig``): keep detections with score >= 0.2; class-wise NMS at IoU 0.5; at
most 15 humans (HICO object 49, ``person``) and 15 other boxes, highest scores first; each kept
human pairs with every other kept box, humans included (person–person pairs serve the HOIs whose
object is a person). The prior of class c for a pair is ``s_h^p · s_o^p`` when c's object is the
pair's object label and 0 otherwise (p = 2.8).

Bad input (NaN / inf coordinates, inverted boxes, labels outside 0..79, mismatched shapes)
raises ``DetectionError`` naming the image; no detection, or no human, gives zero pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import batched_nms

from defr import vocab
from defr.errors import ConfigError, DefrError
from defr.typecheck import json_numbers

LABEL_SPACES = ("hico", "coco80", "coco91")


class DetectionError(DefrError, ValueError):
    """Detections that cannot be paired: the message names the image and the field."""


@dataclass
class PairConfig:
    score_threshold: float = 0.2
    nms_threshold: float = 0.5
    max_humans: int = 15
    max_objects: int = 15
    prior_exponent: float = 2.8

    def __post_init__(self) -> None:
        if self.max_humans < 0 or self.max_objects < 0:
            raise ConfigError(f"max_humans and max_objects must be >= 0, not {self.max_humans}, {self.max_objects}")
        if not 0.0 <= self.nms_threshold <= 1.0:
            raise ConfigError(f"nms_threshold must be in [0, 1], not {self.nms_threshold}")


@dataclass
class Pairs:
    """The human–object pairs of one image (P pairs over K kept detections)."""

    boxes_h: torch.Tensor  # [P, 4] float, pixels of the original image
    boxes_o: torch.Tensor  # [P, 4] float, pixels of the original image
    human: torch.Tensor  # [P] long, index into the kept detections
    object: torch.Tensor  # [P] long, index into the kept detections
    object_label: torch.Tensor  # [P] long, HICO object (0..79)
    score_h: torch.Tensor  # [P] float
    score_o: torch.Tensor  # [P] float
    kept: torch.Tensor  # [K] long, index of each kept detection in the input (humans first, by score)

    def __len__(self) -> int:
        return int(self.boxes_h.shape[0])


def hico_labels_from_coco(labels, which: str = "coco80") -> np.ndarray:
    """COCO detector labels → HICO objects (0..79, person = 49).

    ``coco80``: 0-based contiguous COCO indices (0..79); ``coco91``: COCO category ids (1..90).
    Unknown labels raise ``DetectionError``.
    """
    table = {"coco80": vocab.hico().coco80_to_hico, "coco91": vocab.hico().coco91_to_hico}.get(which)
    if table is None:
        raise ConfigError(f"label space must be 'coco80' or 'coco91', not {which!r}")
    labels = np.asarray(labels)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise DetectionError(f"{which} labels must be integers, got {labels.tolist()[:8]}")
        labels = labels.astype(np.int64)
    unknown = sorted({int(x) for x in labels.ravel()} - set(table))
    if unknown:
        raise DetectionError(f"labels {unknown[:8]} are not {which} labels (known: {min(table)}..{max(table)})")
    return np.array([table[int(x)] for x in labels.ravel()], dtype=np.int64).reshape(labels.shape)


def to_hico_labels(labels, label_space: str = "hico") -> np.ndarray:
    """Labels in ``label_space`` (hico, coco80, coco91) → HICO objects; ``hico`` is returned as is."""
    if label_space not in LABEL_SPACES:
        raise ConfigError(f"label space must be one of {LABEL_SPACES}, not {label_space!r}")
    if label_space == "hico":
        return np.asarray(labels)
    return hico_labels_from_coco(labels, label_space)


def validate_detections(boxes, labels, scores, name: str = "image") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Detections as lists / arrays / tensors → (boxes [N, 4] float32, labels [N] long, scores [N] float32).

    Raises ``DetectionError`` naming ``name`` for wrong shapes, non-finite values, inverted boxes
    (x2 < x1 or y2 < y1), scores outside [0, 1], labels that are not integers in 0..79.
    """
    boxes = _as_tensor(boxes, torch.float32, name, "boxes")
    scores = _as_tensor(scores, torch.float32, name, "scores")
    labels_f = _as_tensor(labels, torch.float64, name, "labels")
    if boxes.numel() == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DetectionError(f"{name}: boxes must have shape [N, 4] (x1, y1, x2, y2), got {list(boxes.shape)}")
    n = boxes.shape[0]
    if labels_f.shape != (n,) or scores.shape != (n,):
        raise DetectionError(
            f"{name}: {n} boxes but labels of shape {list(labels_f.shape)} and scores of shape {list(scores.shape)}"
        )
    for field, t in (("boxes", boxes), ("scores", scores), ("labels", labels_f)):
        bad = ~torch.isfinite(t).reshape(n, t[0].numel() if n else 1).all(dim=1)
        if bad.any():
            raise DetectionError(f"{name}: {field} has NaN or inf at detection(s) {_first(bad)}")
    out_of_range = (scores < 0) | (scores > 1)
    if out_of_range.any():
        raise DetectionError(
            f"{name}: scores must be in [0, 1], got {scores[out_of_range].tolist()[:8]} "
            f"at detection(s) {_first(out_of_range)}"
        )
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inverted.any():
        i = int(inverted.nonzero()[0])
        raise DetectionError(
            f"{name}: inverted box(es) (x2 < x1 or y2 < y1) at detection(s) {_first(inverted)}, "
            f"e.g. {boxes[i].tolist()}; boxes are (x1, y1, x2, y2)"
        )
    bad = (labels_f != labels_f.round()) | (labels_f < 0) | (labels_f >= vocab.NUM_OBJECTS)
    if bad.any():
        raise DetectionError(
            f"{name}: labels must be HICO objects, integers in 0..{vocab.NUM_OBJECTS - 1}; got "
            f"{labels_f[bad].tolist()[:8]} at detection(s) {_first(bad)} (COCO labels: use hico_labels_from_coco)"
        )
    return boxes, labels_f.long(), scores


def _as_tensor(x, dtype: torch.dtype, name: str, field: str) -> torch.Tensor:
    if isinstance(x, (list, tuple)):
        try:  # strings and booleans would be parsed as numbers by numpy
            json_numbers(x, f"{name}: {field}")
        except ConfigError as e:
            raise DetectionError(str(e)) from None
    try:
        t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    except (TypeError, ValueError) as e:
        raise DetectionError(f"{name}: {field} is not a numeric array ({e})") from None
    if t.dtype == torch.bool or t.is_complex():
        raise DetectionError(f"{name}: {field} must be real numbers, got {t.dtype}")
    return t.to(dtype)


def _first(mask: torch.Tensor, k: int = 8) -> list[int]:
    return mask.nonzero().flatten()[:k].tolist()


def make_pairs(boxes, labels, scores, cfg: PairConfig | None = None, name: str = "image") -> Pairs:
    """Detections of one image → its human–object pairs.

    boxes: [N, 4] (x1, y1, x2, y2) pixels of the original image; labels: [N] HICO objects
    (0..79); scores: [N]. Lists, numpy arrays and tensors are accepted. Invalid input raises
    ``DetectionError`` naming ``name``; no detection or no human gives zero pairs.
    """
    cfg = cfg or PairConfig()
    boxes, labels, scores = validate_detections(boxes, labels, scores, name)
    keep = (scores >= cfg.score_threshold).nonzero().flatten()
    keep = keep[batched_nms(boxes[keep], scores[keep], labels[keep], cfg.nms_threshold)]  # sorted by score
    is_human = labels[keep] == vocab.PERSON
    humans, others = keep[is_human][: cfg.max_humans], keep[~is_human][: cfg.max_objects]
    kept = torch.cat([humans, others])
    n_h, n = humans.numel(), kept.numel()
    # Every (human, other kept box) with the human first: humans occupy kept[:n_h].
    h, o = torch.meshgrid(torch.arange(n_h), torch.arange(n), indexing="ij")
    valid = h != o
    h, o = h[valid], o[valid]
    return Pairs(
        boxes_h=boxes[kept[h]],
        boxes_o=boxes[kept[o]],
        human=h,
        object=o,
        object_label=labels[kept[o]],
        score_h=scores[kept[h]],
        score_o=scores[kept[o]],
        kept=kept,
    )


def pair_priors(pairs: Pairs, class_objects: torch.Tensor, exponent: float = 2.8) -> torch.Tensor:
    """[P, C] prior: ``s_h^p · s_o^p`` where class c's object equals the pair's object label, else 0.

    class_objects: [C] long, the HICO object of each class.
    """
    class_objects = torch.as_tensor(class_objects, device=pairs.score_h.device)
    same = pairs.object_label[:, None] == class_objects[None, :]
    strength = (pairs.score_h.pow(exponent) * pairs.score_o.pow(exponent))[:, None]
    return torch.where(same, strength, torch.zeros((), dtype=strength.dtype, device=strength.device))
