"""Robustness to detector box noise (the paper's appendix, Fig. 6): HICO-DET mAP with noisy GT boxes.

The "detector" is the ground truth with Gaussian box noise of ratio r (``defr.eval.gt_detections``:
the noise model, the same draws for every r); each ratio is one detection run over the split and
one official evaluation, in process (``ImageResult``s straight to the evaluator).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from defr.data.hicodet import load_annotations
from defr.eval.gt_detections import image_paths, noisy_gt_detections
from defr.eval.hicodet import SUMMARY_KEYS, hicodet_metrics
from defr.files import atomic_path
from defr.runtime.detect import detect_files
from defr.runtime.detector import HOIDetector


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
        results = detect_files(detector, paths, noisy_gt_detections(annotations, r, seed), batch_size=batch_size)
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
