"""Predicted interaction events against ground-truth spans: precision and recall at a temporal IoU.

A prediction matches a ground-truth span when both name the same (verb, object), their temporal
IoU (frames, inclusive ends) is >= ``t_iou``, and, when ``identity`` maps predicted track ids to
ground-truth entity ids, the prediction's human and object map to the span's. Predictions are
taken by decreasing ``peak_score``, each to the unmatched span of highest IoU (greedy, as in
detection AP); every span matches at most once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def temporal_iou(a: Mapping, b: Mapping) -> float:
    """IoU of two spans' [start_frame, end_frame] (inclusive) frame sets."""
    inter = min(a["end_frame"], b["end_frame"]) - max(a["start_frame"], b["start_frame"]) + 1
    if inter <= 0:
        return 0.0
    union = (a["end_frame"] - a["start_frame"] + 1) + (b["end_frame"] - b["start_frame"] + 1) - inter
    return inter / union


def evaluate_events(
    predicted: Sequence[Mapping],
    truth: Sequence[Mapping],
    t_iou: float = 0.5,
    identity: Mapping[int, int] | None = None,
) -> dict:
    """→ {"precision", "recall", "matched", "predicted", "truth", "t_iou"} (precision of no prediction: 0)."""
    used: set[int] = set()
    matched = 0
    for p in sorted(predicted, key=lambda e: -e["peak_score"]):
        best, best_iou = None, t_iou
        for j, g in enumerate(truth):
            if j in used or (p["verb"], p["object"]) != (g["verb"], g["object"]):
                continue
            if identity is not None and (
                identity.get(p["human_id"]) != g["human_id"] or identity.get(p["object_id"]) != g["object_id"]
            ):
                continue
            iou = temporal_iou(p, g)
            if iou >= best_iou:
                best, best_iou = j, iou
        if best is not None:
            used.add(best)
            matched += 1
    return {
        "precision": matched / len(predicted) if predicted else 0.0,
        "recall": matched / len(truth) if truth else 0.0,
        "matched": matched,
        "predicted": len(predicted),
        "truth": len(truth),
        "t_iou": t_iou,
    }
