"""The mask study: HICO-DET metrics with the hard mask, the released additive mask and no mask at all, on a
synthetic set's test split and on its images with >= 2 people (where the mask has pairs to separate).
Same model, same noisy ground-truth boxes; ``defr demo`` and ``benchmarks/effects.py`` report it.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from defr.data import hicodet_files
from defr.data.hicodet import HICODetAnnotations, load_annotations
from defr.data.synth.stats import distinct_boxes
from defr.eval.gt_detections import image_paths, noisy_gt_detections
from defr.eval.hicodet import SUMMARY_KEYS, hicodet_metrics
from defr.model import load_model
from defr.runtime import HOIDetector, ModelOptions
from defr.runtime.detect import run_detection
from defr.runtime.registry import torch_backend
from defr.runtime.whole_image import STUDY_MASK_MODES, WholeImageBackend


def images_with_people(annotations: HICODetAnnotations, people: int = 2) -> HICODetAnnotations:
    """The annotations of the images holding at least ``people`` distinct human boxes (``distinct_boxes``)."""
    keep = [i for i, b in enumerate(annotations.boxes_h) if len(distinct_boxes(b)) >= people]
    pick = lambda xs: [xs[i] for i in keep]  # noqa: E731
    return replace(
        annotations,
        filenames=pick(annotations.filenames),
        sizes=annotations.sizes[keep],
        boxes_h=pick(annotations.boxes_h),
        boxes_o=pick(annotations.boxes_o),
        hoi=pick(annotations.hoi),
        object=pick(annotations.object),
    )


def mask_effect(checkpoint: str | os.PathLike, synth_root: Path, noise: float = 0.05, seed: int = 0) -> dict:
    """HICO-DET full / rare / non-rare with the hard mask, the released additive mask and no mask, on the test
    split of ``synth_root`` and on its images with >= 2 people: same model, same (noisy GT) boxes.

    Returns {"all": {mode: metrics}, "two_plus_people": {mode: metrics}, "images", "images_two_plus_people",
    "hard_minus_none": {"all", "two_plus_people"} (mAP points)}.
    """
    annotations_path, images_dir = hicodet_files(synth_root, "test")
    annotations = load_annotations(annotations_path)
    crowded = images_with_people(annotations)
    paths = image_paths(annotations, images_dir)
    dets = noisy_gt_detections(annotations, noise, seed)
    model = load_model(checkpoint)
    report: dict = {"noise": noise, "images": annotations.num_images, "images_two_plus_people": crowded.num_images}
    for mode in STUDY_MASK_MODES:
        backend = torch_backend(model, ModelOptions(mask_mode=None if mode == "none" else mode))  # none: any mode
        detector = HOIDetector(WholeImageBackend(backend) if mode == "none" else backend)
        results = run_detection(detector, paths, dets, progress=False)
        for name, subset in (("all", annotations), ("two_plus_people", crowded)):
            kept = {f: results[f] for f in subset.filenames}
            metrics = hicodet_metrics(subset, kept) if subset.num_images else {}
            report.setdefault(name, {})[mode] = {k: metrics.get(k) for k in SUMMARY_KEYS}
    report["hard_minus_none"] = {
        name: _points(report[name]["hard"]["full"], report[name]["none"]["full"]) for name in ("all", "two_plus_people")
    }
    return report


def _points(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else 100.0 * (a - b)
