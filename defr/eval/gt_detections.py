"""The ground truth of a HICO-DET split as the detector: its annotated images and their GT boxes as ``Detections``.

Used where the boxes should not depend on a detector: box-noise studies (``defr.eval.box_noise``), INT8
calibration and its accuracy gate (``defr.export``), the demo. The detections of an image are its
distinct GT boxes (human boxes with label 49, object boxes with their object label, score 1.0),
converted from the annotation files' 1-based inclusive pixels to 0-based ones by subtracting 1 from
every coordinate (the HICO-DET evaluator adds the 1 back).

Box noise: each coordinate gets Gaussian noise scaled by the box size, ``x' = x + N(0, r·W_box)``,
``y' = y + N(0, r·H_box)``; a box whose corners cross is re-ordered (min / max per axis) so it stays
valid. The same standard-normal draws are used for every ratio r (seeded per image), so a curve over r
is smooth rather than re-sampled. Noisy boxes may leave the image on purpose: they are made with
``in_image=False`` (not bounds-checked); GT boxes without noise are checked like a detector's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from defr import vocab
from defr.data.hicodet import HICODetAnnotations
from defr.detections import Detections
from defr.errors import ConfigError
from defr.runtime.io import InputFileError


def gt_detections(boxes_h: np.ndarray, boxes_o: np.ndarray, objects: np.ndarray, name: str = "image") -> Detections:
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
    return Detections(boxes, labels, np.ones(len(labels), dtype=np.float32), name=name)


# Noise of 10 box sizes (one standard deviation) already throws every box far off its image; 1e308 made the
# boxes inf, refused later as "boxes has NaN or inf" of an image the user did not get wrong (round-5 probe).
MAX_NOISE_RATIO = 10.0


def add_box_noise(boxes: np.ndarray, ratio: float, eps: np.ndarray) -> np.ndarray:
    """boxes: [N, 4] (x1, y1, x2, y2); eps: [N, 4] standard normal → noisy boxes, corners re-ordered."""
    if not 0 <= ratio <= MAX_NOISE_RATIO:
        raise ConfigError(f"noise ratio must be in [0, {MAX_NOISE_RATIO:g}], not {ratio}")
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    noisy = boxes + ratio * eps * np.stack([w, h, w, h], axis=1)
    x, y = noisy[:, 0::2], noisy[:, 1::2]
    return np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], axis=1)


def noisy_gt_detections(annotations: HICODetAnnotations, ratio: float, seed: int = 0) -> dict[str, Detections]:
    """{filename: detections} of every annotated image, GT boxes with noise ``ratio`` (0: the GT boxes)."""
    out = {}
    for i, name in enumerate(annotations.filenames):
        gt = gt_detections(annotations.boxes_h[i], annotations.boxes_o[i], annotations.object[i], name)
        if ratio == 0:
            out[name] = gt
            continue
        eps = np.random.default_rng([seed, i]).standard_normal(gt.boxes.shape)
        noisy = add_box_noise(gt.boxes.astype(np.float64), ratio, eps).astype(np.float32)
        out[name] = Detections(noisy, gt.labels, gt.scores, name=name, in_image=False)
    return out


def image_paths(annotations: HICODetAnnotations, images_dir: str | os.PathLike) -> list[Path]:
    """The annotated images in ``images_dir``; InputFileError listing any that are missing."""
    paths = [Path(images_dir) / name for name in annotations.filenames]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise InputFileError(f"{images_dir}: {len(missing)} annotated image(s) missing: {', '.join(missing[:5])}")
    return paths
