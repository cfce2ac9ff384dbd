"""HICO-DET evaluation: the official protocol (ho-rcnn's ``eval_one.m`` and ``VOCevaldet_bboxpair.m``), vectorised.

Per HOI class, detections of all images are ranked by decreasing score (ties keep image order, then the
order within the image, as MATLAB's stable sort). Each detection is compared with every GT pair of its
class in its image; the pair with the largest ``min(IoU_human, IoU_object)`` is its candidate (the first
one on ties). It is a true positive if that overlap is ≥ 0.5 and no higher-ranked detection took the
candidate already; otherwise (a duplicate, too little overlap, or no GT of the class in the image) it is
a false positive. Matched GT pairs stay candidates: a duplicate is not re-matched to the next best pair.
AP is 11-point interpolated (``defr.eval.ap``).

Boxes use the +1 pixel convention: GT boxes in the annotation files are 1-based inclusive
``[x1, y1, x2, y2]``; detections are 0-based and get +1 on every coordinate; a box covers
``(x2 - x1 + 1)·(y2 - y1 + 1)`` pixels and the intersection is ``(min x2 - max x1 + 1)·(...)`` when
both factors are positive, else the IoU is 0.

Classes without GT pairs have no AP: they are reported and left out of the means (the official code
averages a 0 for them; every class of the real test set has GT pairs, so the numbers agree there).
Known-object setting: a class's detections in images whose GT holds no pair with that class's object
are dropped before ranking.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defr.data.hicodet import HICODetAnnotations, box_array
from defr.detections import box_iou_inclusive
from defr.errors import ConfigError, DefrError
from defr.eval.ap import mean_ap, precision_recall, voc_ap_11
from defr.jsonio import read_json
from defr.runtime.detector import ImageResult
from defr.typecheck import json_numbers

SETTINGS = ("default", "known-object")
IOU_THRESHOLD = 0.5
RESULT_KEYS = ("boxes_h", "boxes_o", "hoi", "scores")
SUMMARY_KEYS = ("full", "rare", "non_rare")  # the mAPs a HICO-DET evaluation reports


class ResultsError(DefrError, ValueError):
    """Detection results that cannot be evaluated; the message names the image and the field."""


@dataclass
class BoxPairs:
    """Human-object box pairs of a whole split: image [K] int64, hoi [K] int64, boxes_h / boxes_o [K, 4] float64.

    Boxes are 1-based inclusive pixels (detections already shifted by +1).
    """

    image: np.ndarray
    hoi: np.ndarray
    boxes_h: np.ndarray
    boxes_o: np.ndarray

    def __len__(self) -> int:
        return len(self.image)

    def subset(self, keep: np.ndarray) -> BoxPairs:
        return BoxPairs(self.image[keep], self.hoi[keep], self.boxes_h[keep], self.boxes_o[keep])


# --------------------------------------------------------------------------- results


def load_results(
    path: str | os.PathLike, annotations: HICODetAnnotations, allow_empty: bool = False
) -> dict[str, dict]:
    """A results file ``{filename: {"boxes_h", "boxes_o", "hoi", "scores"}}`` (0-based pixels), validated.

    Refused with the image and field named: numbers given as strings or booleans, scores outside
    [0, 1], inverted boxes, lengths that differ, unknown file names; a file without any detection
    (``{}``, or only empty entries) unless ``allow_empty`` (its mAP is 0).
    """
    path = Path(path)
    results = read_json(path, error=ResultsError)
    try:
        detections, _ = flatten_results(results, annotations)
    except ResultsError as e:
        raise ResultsError(f"{path}: {e}") from None
    if not allow_empty and len(detections) == 0:
        raise ResultsError(
            f"{path}: no detections at all ({len(results)} image entries): a results file of an empty run? "
            "Pass --allow-empty to evaluate it anyway (mAP 0)"
        )
    return results


def flatten_results(results: Mapping, annotations: HICODetAnnotations) -> tuple[BoxPairs, np.ndarray]:
    """Results → (detections with boxes shifted to 1-based, scores [D] float64), in annotation image order.

    Entries are results-format dicts (checked) or ``ImageResult``s (in-process: taken as they are, no
    JSON round trip). Images without an entry have no detections; a file name not in the annotations
    is an error.
    """
    if not isinstance(results, Mapping):
        raise ResultsError(f"results must be a mapping {{filename: entry}}, not {type(results).__name__}")
    index = {name: i for i, name in enumerate(annotations.filenames)}
    unknown = sorted(name for name in results if name not in index)
    if unknown:
        raise ResultsError(f"{len(unknown)} file name(s) not in the annotations: {', '.join(map(str, unknown[:5]))}")
    names = sorted(results, key=index.__getitem__)
    entries = [_result_entry(results[name], name, annotations.num_classes) for name in names]
    image = [np.full(len(hoi), index[name], dtype=np.int64) for name, (hoi, *_) in zip(names, entries, strict=True)]
    hoi, boxes_h, boxes_o, scores = (list(column) for column in zip(*entries, strict=True)) if entries else ([],) * 4
    return (
        BoxPairs(
            np.concatenate([np.zeros(0, np.int64), *image]),
            np.concatenate([np.zeros(0, np.int64), *hoi]),
            np.concatenate([np.zeros((0, 4)), *boxes_h]) + 1.0,
            np.concatenate([np.zeros((0, 4)), *boxes_o]) + 1.0,
        ),
        np.concatenate([np.zeros(0), *scores]),
    )


def _result_entry(entry, name: str, num_classes: int) -> tuple[np.ndarray, ...]:
    """One image's entry → hoi [D] int64, boxes_h [D, 4], boxes_o [D, 4], scores [D] (0-based boxes)."""
    if isinstance(entry, ImageResult):  # made by HOIDetector: valid by construction
        return (
            entry.hoi.cpu().numpy().astype(np.int64),
            entry.boxes_h.cpu().double().numpy().reshape(-1, 4),
            entry.boxes_o.cpu().double().numpy().reshape(-1, 4),
            entry.scores.cpu().double().numpy(),
        )
    if not isinstance(entry, Mapping) or any(k not in entry for k in RESULT_KEYS):
        raise ResultsError(f"{name}: an entry needs keys {list(RESULT_KEYS)}")
    try:
        for key in RESULT_KEYS:
            json_numbers(entry[key], f"{name}: {key}")
    except ConfigError as e:
        raise ResultsError(str(e)) from None
    try:
        boxes_h, boxes_o = box_array(entry["boxes_h"]), box_array(entry["boxes_o"])
        scores = np.asarray(entry["scores"], dtype=np.float64)
        hoi = np.asarray(entry["hoi"])
    except (TypeError, ValueError):
        raise ResultsError(f"{name}: boxes must be [D, 4] numbers, hoi and scores [D] numbers") from None
    if hoi.size == 0:  # [] parses as float
        hoi = hoi.astype(np.int64)
    num = scores.size
    if len(boxes_h) != num or len(boxes_o) != num or hoi.shape != (num,) or scores.shape != (num,):
        raise ResultsError(
            f"{name}: lengths differ: boxes_h {boxes_h.shape}, boxes_o {boxes_o.shape}, hoi {hoi.shape}, "
            f"scores {scores.shape} (expected [D, 4], [D, 4], [D], [D])"
        )
    if hoi.dtype.kind not in "iu":
        raise ResultsError(f"{name}: hoi must be integer class ids, got {hoi.dtype}")
    hoi = hoi.astype(np.int64)
    outside = sorted(set(hoi[(hoi < 0) | (hoi >= num_classes)].tolist()))
    if outside:
        raise ResultsError(f"{name}: hoi ids {outside[:5]} outside [0, {num_classes})")
    if not np.isfinite(scores).all():
        raise ResultsError(f"{name}: scores must be finite numbers (found NaN or inf)")
    if not (np.isfinite(boxes_h).all() and np.isfinite(boxes_o).all()):
        raise ResultsError(f"{name}: boxes must be finite numbers (found NaN or inf)")
    if ((scores < 0) | (scores > 1)).any():
        bad = scores[(scores < 0) | (scores > 1)]
        raise ResultsError(f"{name}: scores must be in [0, 1], got {bad[:5].tolist()}")
    for key, boxes in (("boxes_h", boxes_h), ("boxes_o", boxes_o)):
        inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        if inverted.any():
            i = int(np.flatnonzero(inverted)[0])
            raise ResultsError(f"{name}: {key}[{i}] = {boxes[i].tolist()} is inverted (x2 < x1 or y2 < y1)")
    return hoi, boxes_h, boxes_o, scores


# --------------------------------------------------------------------------- evaluation


def evaluate_hicodet(annotations: HICODetAnnotations, results: Mapping, setting: str = "default") -> dict:
    """HICO-DET mAP of ``results`` (results format or ``ImageResult``s, 0-based boxes) in ``setting``
    ("default" or "known-object").

    Returns ``full``, ``rare``, ``non_rare`` (mean AP as fractions, None without classes to average),
    ``setting``, ``per_class_ap`` ([C], None for classes without GT), ``num_gt`` ([C] GT pairs) and
    ``classes_without_gt``.
    """
    if setting not in SETTINGS:
        raise ConfigError(f"setting must be one of {list(SETTINGS)}, not {setting!r}")
    detections, scores = flatten_results(results, annotations)
    gt = gt_pairs(annotations)
    if setting == "known-object":
        keep = known_object(detections, annotations)
        detections, scores = detections.subset(keep), scores[keep]
    num_gt = annotations.num_gt()
    per_class = pair_class_aps(detections, scores, gt, num_gt, annotations.num_images)
    return {
        "full": mean_ap(per_class, range(annotations.num_classes)),
        "rare": mean_ap(per_class, annotations.rare),
        "non_rare": mean_ap(per_class, annotations.non_rare),
        "setting": setting,
        "per_class_ap": per_class,
        "num_gt": num_gt.tolist(),
        "classes_without_gt": np.flatnonzero(num_gt == 0).tolist(),
    }


def hicodet_metrics(annotations: HICODetAnnotations, results: Mapping) -> dict:
    """``evaluate_hicodet`` in the default setting, as plain JSON types (NaN → None)."""
    return _jsonable(evaluate_hicodet(annotations, results, setting="default"))


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, np.generic)):
        return _jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def gt_pairs(annotations: HICODetAnnotations) -> BoxPairs:
    """All GT pairs of the split, in image order then file order."""
    image = np.concatenate([np.zeros(0, np.int64)] + [np.full(len(h), i) for i, h in enumerate(annotations.hoi)])
    return BoxPairs(
        image.astype(np.int64),
        np.concatenate([np.zeros(0, np.int64), *annotations.hoi]),
        np.concatenate([np.zeros((0, 4)), *annotations.boxes_h]),
        np.concatenate([np.zeros((0, 4)), *annotations.boxes_o]),
    )


def known_object(detections: BoxPairs, annotations: HICODetAnnotations) -> np.ndarray:
    """[D] bool: the detection's image has a GT pair with the object of the detection's class."""
    gt_object = np.concatenate([np.zeros(0, np.int64), *annotations.object])
    gt_image = np.concatenate([np.zeros(0, np.int64)] + [np.full(len(o), i) for i, o in enumerate(annotations.object)])
    num_objects = int(max(annotations.class_objects.max(), gt_object.max(initial=0))) + 1
    present = np.zeros((annotations.num_images, num_objects), dtype=bool)
    present[gt_image, gt_object] = True
    return present[detections.image, annotations.class_objects[detections.hoi]]


def pair_class_aps(
    detections: BoxPairs, scores: np.ndarray, gt: BoxPairs, num_gt: np.ndarray, num_images: int
) -> list[float | None]:
    """[C] 11-point AP per class (None where the class has no GT pair)."""
    order = np.lexsort((-scores, detections.hoi))  # by class, then decreasing score; lexsort is stable
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    candidate, overlap = best_gt_pairs(detections, gt, num_images)
    is_tp = true_positives(candidate, overlap, rank)[order]
    bounds = np.searchsorted(detections.hoi[order], np.arange(len(num_gt) + 1))
    return [
        voc_ap_11(*precision_recall(is_tp[bounds[c] : bounds[c + 1]], int(num_gt[c]))) if num_gt[c] else None
        for c in range(len(num_gt))
    ]


def best_gt_pairs(detections: BoxPairs, gt: BoxPairs, num_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Each detection's candidate GT pair (same class, same image, largest min IoU, first on ties).

    Returns (candidate [D] int64 index into ``gt``, -1 when there is none; overlap [D] float64, -inf when none).
    """
    gt_key = gt.hoi * num_images + gt.image
    gt_order = np.argsort(gt_key, kind="stable")
    det_key = detections.hoi * num_images + detections.image
    start = np.searchsorted(gt_key[gt_order], det_key, side="left")
    count = np.searchsorted(gt_key[gt_order], det_key, side="right") - start
    # every (detection, GT of its class and image) combination, GT in file order within a detection
    det_of = np.repeat(np.arange(len(detections)), count)
    within = np.arange(len(det_of)) - np.repeat(np.cumsum(count) - count, count)
    gt_of = gt_order[np.repeat(start, count) + within]
    overlap = np.minimum(
        box_iou_inclusive(detections.boxes_h[det_of], gt.boxes_h[gt_of]),
        box_iou_inclusive(detections.boxes_o[det_of], gt.boxes_o[gt_of]),
    )
    best = np.lexsort((within, -overlap, det_of))
    best = best[np.r_[True, det_of[best][1:] != det_of[best][:-1]]] if len(best) else best
    candidate = np.full(len(detections), -1, dtype=np.int64)
    best_overlap = np.full(len(detections), -np.inf)
    candidate[det_of[best]] = gt_of[best]
    best_overlap[det_of[best]] = overlap[best]
    return candidate, best_overlap


def true_positives(candidate: np.ndarray, overlap: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """[D] bool: overlap ≥ 0.5 and the best-ranked such detection of its candidate GT pair."""
    hits = np.flatnonzero(overlap >= IOU_THRESHOLD)
    hits = hits[np.lexsort((rank[hits], candidate[hits]))]
    first = hits[np.r_[True, candidate[hits][1:] != candidate[hits][:-1]]] if len(hits) else hits
    is_tp = np.zeros(len(candidate), dtype=bool)
    is_tp[first] = True
    return is_tp
