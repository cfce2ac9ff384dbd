"""Predicted interaction events against ground-truth spans: precision and recall at a temporal IoU.

A prediction matches a ground-truth span when both name the same (verb, object), their temporal
IoU (frames, inclusive ends) is >= ``t_iou``, and, when ``identity`` maps predicted track ids to
ground-truth entity ids, the prediction's human and object map to the span's. Predictions are
taken by decreasing ``peak_score``, each to the unmatched span of highest IoU (greedy, as in
detection AP); every span matches at most once.

Matching is by key (class, and identity when given) and by time: each prediction is compared only with the
spans of its key that overlap it (``SpanIndex``), so thousands of events on each side take milliseconds,
not the product of their counts.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence


def temporal_iou(a: Mapping, b: Mapping) -> float:
    """IoU of two spans' [start_frame, end_frame] (inclusive) frame sets."""
    inter = min(a["end_frame"], b["end_frame"]) - max(a["start_frame"], b["start_frame"]) + 1
    if inter <= 0:
        return 0.0
    union = (a["end_frame"] - a["start_frame"] + 1) + (b["end_frame"] - b["start_frame"] + 1) - inter
    return inter / union


class SpanIndex:
    """Spans (``start_frame`` / ``end_frame`` inclusive) sorted by start, to find those overlapping a span in
    O(log n + k): a span can overlap [s, e] only if it starts by e and the spans up to it reach s."""

    def __init__(self, spans: Sequence[Mapping], ids: Sequence[int]):
        order = sorted(range(len(spans)), key=lambda k: spans[k]["start_frame"])
        self.starts = [spans[k]["start_frame"] for k in order]
        self.ends = [spans[k]["end_frame"] for k in order]
        self.ids = [ids[k] for k in order]
        self.reach = list(itertools.accumulate(self.ends, max))

    def overlapping(self, start: int, end: int) -> Iterator[int]:
        """The ids of the spans that share a frame with [start, end]."""
        for k in range(bisect_left(self.reach, start), bisect_right(self.starts, end)):
            if self.ends[k] >= start:
                yield self.ids[k]


def index_by(spans: Sequence[Mapping], key: Callable[[Mapping], Hashable]) -> dict[Hashable, SpanIndex]:
    """{key: SpanIndex of the spans with that key (ids: their positions in ``spans``)}."""
    groups: dict[Hashable, list[int]] = {}
    for j, span in enumerate(spans):
        groups.setdefault(key(span), []).append(j)
    return {k: SpanIndex([spans[j] for j in ids], ids) for k, ids in groups.items()}


def greedy_matches(
    predicted: Sequence[Mapping],
    truth: Sequence[Mapping],
    t_iou: float,
    key_predicted: Callable[[Mapping], Hashable],
    key_truth: Callable[[Mapping], Hashable],
) -> dict[int, int]:
    """{predicted index: true index}: predictions by decreasing ``peak_score`` (stable), each to the unmatched
    true span of the same key with the highest temporal IoU >= ``t_iou`` (the later one on ties)."""
    index = index_by(truth, key_truth)
    used: dict[int, int] = {}
    taken: set[int] = set()
    for i in sorted(range(len(predicted)), key=lambda i: -predicted[i]["peak_score"]):
        p = predicted[i]
        spans = index.get(key_predicted(p))
        if spans is None:
            continue
        best = None
        for j in spans.overlapping(p["start_frame"], p["end_frame"]):
            iou = temporal_iou(p, truth[j])
            if j not in taken and iou >= t_iou and (best is None or (iou, j) > best):
                best = (iou, j)
        if best is not None:
            used[i] = best[1]
            taken.add(best[1])
    return used


def evaluate_events(
    predicted: Sequence[Mapping],
    truth: Sequence[Mapping],
    t_iou: float = 0.5,
    identity: Mapping[int, int] | None = None,
) -> dict:
    """→ {"precision", "recall", "matched", "predicted", "truth", "t_iou"} (precision of no prediction: 0)."""
    if identity is None:
        matches = greedy_matches(predicted, truth, t_iou, _class_key, _class_key)
    else:
        matches = greedy_matches(
            predicted,
            truth,
            t_iou,
            lambda p: (p["verb"], p["object"], identity.get(p["human_id"]), identity.get(p["object_id"])),
            pair_key,
        )
    matched = len(matches)
    return {
        "precision": matched / len(predicted) if predicted else 0.0,
        "recall": matched / len(truth) if truth else 0.0,
        "matched": matched,
        "predicted": len(predicted),
        "truth": len(truth),
        "t_iou": t_iou,
    }


def _class_key(e: Mapping) -> tuple:
    return (e["verb"], e["object"])


def pair_key(e: Mapping) -> tuple:
    """(verb, object, human_id, object_id): what a match with identity must share."""
    return (e["verb"], e["object"], e["human_id"], e["object_id"])
