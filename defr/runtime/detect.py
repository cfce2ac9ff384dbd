"""Detection over files: a list of image paths and their detections → the results format."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tqdm import tqdm

from defr.detections import Detections
from defr.errors import ConfigError
from defr.runtime.detector import HOIDetector, ImageResult
from defr.runtime.io import read_image


def detect_files(
    detector: HOIDetector,
    image_paths: Sequence[str | os.PathLike],
    detections: Mapping[str, Detections | dict],
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, ImageResult]:
    """Detect HOIs in ``image_paths`` in batches → ``{filename: ImageResult}`` (in-process evaluation takes
    these as they are: ``defr.eval.hicodet.evaluate_hicodet``).

    detections: ``{filename: Detections}`` (or dicts in HICO labels) with an entry per image.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, not {batch_size}")
    paths = [Path(p) for p in image_paths]
    results: dict[str, ImageResult] = {}
    with tqdm(total=len(paths), desc="detect", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            names = [p.name for p in chunk]
            images = [read_image(p) for p in chunk]
            out = detector.detect(images, [detections[n] for n in names], names=[str(p) for p in chunk])
            results.update(zip(names, out, strict=True))
            bar.update(len(chunk))
    return results


def run_detection(
    detector: HOIDetector,
    image_paths: Sequence[str | os.PathLike],
    detections: Mapping[str, Detections | dict],
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, dict]:
    """``detect_files`` in the results format ``{filename: {"boxes_h", "boxes_o", "hoi", "scores"}}`` (to write)."""
    results = detect_files(detector, image_paths, detections, batch_size, progress)
    return {name: r.to_json() for name, r in results.items()}
