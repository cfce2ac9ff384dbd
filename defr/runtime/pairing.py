"""Detections → human–object pairs → per-class priors, with the released pipeline's rules.

Rules (all in ``PairConfig``): keep detections with score >= 0.2; class-wise NMS at IoU 0.5; at
most 15 humans (HICO object 49, ``person``) and 15 other boxes, highest scores first; each kept
human pairs with every other kept box, humans included (person–person pairs serve the HOIs whose
object is a person). The prior of class c for a pair is ``s_h^p · s_o^p`` when c's object is the
pair's object label and 0 otherwise (p = 2.8).

Detections come in as ``defr.detections.Detections`` (validated once, where they are made); no
detection, or no human, gives zero pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms

from defr import vocab
from defr.detections import Detections
from defr.errors import ConfigError


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


def make_pairs(detections: Detections, cfg: PairConfig | None = None) -> Pairs:
    """Detections of one image (boxes in pixels of the original image, HICO labels) → its human–object pairs.

    No detection or no human gives zero pairs.
    """
    cfg = cfg or PairConfig()
    boxes, labels, scores = detections.tensors()
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
