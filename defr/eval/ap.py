"""Average precision with 11-point interpolation, as HICO's and HICO-DET's released MATLAB evaluators compute it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from defr.errors import ConfigError

# MATLAB's ``0:0.1:1``, which the released evaluators loop over: its colon operator builds the first half as
# k·0.1 and the second half as 1 - (10 - k)·0.1, so t = 0.3 is 0.30000000000000004 but t = 0.7 is exactly 0.7.
RECALL_THRESHOLDS = tuple(k * 0.1 if k <= 5 else 1.0 - (10 - k) * 0.1 for k in range(11))


def voc_ap_11(recall: np.ndarray, precision: np.ndarray) -> float:
    """Mean over t in 0, 0.1, ..., 1 of the highest precision at recall ≥ t (0 where no point reaches t).

    recall, precision: [K] float, the precision-recall points of a ranking (any order).
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if recall.shape != precision.shape or recall.ndim != 1:
        raise ConfigError(f"recall and precision must be 1-D of equal length, got {recall.shape} and {precision.shape}")
    total = 0.0
    for t in RECALL_THRESHOLDS:
        reached = precision[recall >= t]
        total += float(reached.max()) if reached.size else 0.0
    return total / len(RECALL_THRESHOLDS)


def precision_recall(is_positive: np.ndarray, num_positives: int) -> tuple[np.ndarray, np.ndarray]:
    """(recall [K], precision [K]) after each of K ranked items; is_positive: [K] bool in rank order."""
    if num_positives < 1:
        raise ConfigError(f"num_positives must be >= 1, got {num_positives}")
    tp = np.cumsum(is_positive, dtype=np.float64)
    return tp / num_positives, tp / np.arange(1, len(tp) + 1)


def average_precision_11(scores: np.ndarray, is_positive: np.ndarray, num_positives: int) -> float:
    """11-point AP of ranking items by decreasing score (ties keep input order, like MATLAB's stable sort).

    scores: [K] float; is_positive: [K] bool; num_positives: positives in all, ranked or not (≥ 1), so
    positives that were never retrieved cap the recall.
    """
    scores = np.asarray(scores, dtype=np.float64)
    is_positive = np.asarray(is_positive, dtype=bool)
    if scores.shape != is_positive.shape or scores.ndim != 1:
        raise ConfigError(
            f"scores and is_positive must be 1-D of equal length, got {scores.shape}, {is_positive.shape}"
        )
    order = np.argsort(-scores, kind="stable")
    return voc_ap_11(*precision_recall(is_positive[order], num_positives))


def mean_ap(per_class: Sequence[float | None], classes: Iterable[int]) -> float | None:
    """Mean of the APs of ``classes`` that have one (None entries: classes that could not be evaluated);
    None when none has."""
    values = [per_class[c] for c in classes if per_class[c] is not None]
    return float(np.mean(values)) if values else None
