"""Robustness to detector box noise (the paper's appendix, Fig. 6): HICO-DET mAP with noisy GT boxes.

The "detector" is the ground truth: the distinct GT boxes of each test image (human boxes with
label 49, object boxes with their object label, score 1.0), converted from the annotation files'
1-based inclusive pixels to 0-based ones by subtracting 1 from every coordinate (the HICO-DET
evaluator adds the 1 back). Each coordinate then gets Gaussian noise scaled by the box size:
``x' = x + N(0, r·W_box)``, ``y' = y + N(0, r·H_box)``; a box whose corners cross is re-ordered
(min / max per axis) so it stays valid. The same standard-normal draws are used for every ratio
r (seeded per image), so the curve over r is smooth rather than re-sampled.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from defr import vocab
from defr.data.hicodet import HICODetAnnotations, load_annotations
from defr.errors import ConfigError
from defr.eval.hicodet import SUMMARY_KEYS, evaluate_hicodet
from defr.files import atomic_path
from defr.runtime.detect import run_detection
from defr.runtime.detector import HOIDetector
from defr.runtime.io import InputFileError


def gt_detections(boxes_h: np.ndarray, boxes_o: np.ndarray, objects: np.ndarray) -> dict:
    """One image's GT pairs as detections: distinct boxes, 0-based pixels, labels (humans 49), scores 1.

    boxes_h, boxes_o: [G, 4] 1-based inclusive pixels (the annotation files'); objects: [G] HICO objects.
    """
    entries = {}  # (box, label) → None, in first-seen order
    for box in np.asarray(boxes_h, dtype=np.float64).reshape(-1, 4):
        entries[(tuple(box.tolist()), vocab.PERSON)] = None
    for box, obj in zip(np.asarray(boxes_o, dtype=np.float64).reshape(-1, 4), objects, strict=True):
        entries[(tuple(box.tolist()), int(obj))] = None
    boxes = np.array([b for b, _ in entries], dtype=np.float64).reshape(-1, 4) - 1.0
    labels = np.array([label for _, label in entries], dtype=np.int64)
    return {"boxes": boxes, "labels": labels, "scores": np.ones(len(labels), dtype=np.float32)}


def add_box_noise(boxes: np.ndarray, ratio: float, eps: np.ndarray) -> np.ndarray:
    """boxes: [N, 4] (x1, y1, x2, y2); eps: [N, 4] standard normal → noisy boxes, corners re-ordered."""
    if not ratio >= 0:
        raise ConfigError(f"noise ratio must be >= 0, not {ratio}")
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    noisy = boxes + ratio * eps * np.stack([w, h, w, h], axis=1)
    x, y = noisy[:, 0::2], noisy[:, 1::2]
    return np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], axis=1)


def noisy_gt_detections(annotations: HICODetAnnotations, ratio: float, seed: int = 0) -> dict[str, dict]:
    """{filename: detections} of every annotated image, GT boxes with noise ``ratio``."""
    out = {}
    for i, name in enumerate(annotations.filenames):
        dets = gt_detections(annotations.boxes_h[i], annotations.boxes_o[i], annotations.object[i])
        eps = np.random.default_rng([seed, i]).standard_normal(dets["boxes"].shape)
        dets["boxes"] = add_box_noise(dets["boxes"], ratio, eps).astype(np.float32)
        out[name] = dets
    return out


def image_paths(annotations: HICODetAnnotations, images_dir: str | os.PathLike) -> list[Path]:
    """The annotated images in ``images_dir``; InputFileError listing any that are missing."""
    paths = [Path(images_dir) / name for name in annotations.filenames]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise InputFileError(f"{images_dir}: {len(missing)} annotated image(s) missing: {', '.join(missing[:5])}")
    return paths


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "tolist"):
        return _jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def hicodet_metrics(annotations: HICODetAnnotations, results: dict) -> dict:
    """``evaluate_hicodet`` in the default setting, as plain JSON types."""
    return _jsonable(evaluate_hicodet(annotations, results, setting="default"))


def box_noise_study(
    detector: HOIDetector,
    annotations_path: str | os.PathLike,
    images_dir: str | os.PathLike,
    ratios: Sequence[float] = (0.0, 0.05, 0.1, 0.2),
    seed: int = 0,
    batch_size: int = 8,
) -> list[dict]:
    """HICO-DET mAP with noisy GT boxes as detections, one row per noise ratio.

    Returns ``[{"ratio": r, "full": ..., "rare": ..., "non_rare": ..., "metrics": {all metrics}}]``.
    """
    annotations = load_annotations(annotations_path)
    paths = image_paths(annotations, images_dir)
    rows = []
    for r in ratios:
        results = run_detection(detector, paths, noisy_gt_detections(annotations, r, seed), batch_size=batch_size)
        metrics = hicodet_metrics(annotations, results)
        rows.append({"ratio": float(r), **{k: metrics.get(k) for k in SUMMARY_KEYS}, "metrics": metrics})
    return rows


def plot_box_noise(rows: list[dict], path: str | os.PathLike) -> Path:
    """mAP (full / rare / non-rare) against the noise ratio → PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ratios = [row["ratio"] for row in rows]
    for key, style in zip(SUMMARY_KEYS, ("o-", "s--", "^:"), strict=True):
        values = [row[key] if row[key] is not None else float("nan") for row in rows]
        ax.plot(ratios, values, style, label=key.replace("_", "-"))
    ax.set(xlabel="box noise ratio r", ylabel="mAP", title="HOI detection with noisy GT boxes")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    finally:
        plt.close(fig)
    return path
