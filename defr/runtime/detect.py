"""Detection over files: a list of image paths and their detections → the results format."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from defr.errors import ConfigError
from defr.runtime.detector import HOIDetector
from defr.runtime.io import read_image


def run_detection(
    detector: HOIDetector,
    image_paths: Sequence[str | os.PathLike],
    detections: dict[str, dict],
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, dict]:
    """Detect HOIs in ``image_paths`` in batches → results format ``{filename: entry}``.

    detections: ``{filename: {"boxes", "labels" (HICO), "scores"}}`` with an entry per image.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, not {batch_size}")
    paths = [Path(p) for p in image_paths]
    results: dict[str, dict] = {}
    with tqdm(total=len(paths), desc="detect", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            names = [p.name for p in chunk]
            images = [read_image(p) for p in chunk]
            out = detector.detect(images, [detections[n] for n in names], names=[str(p) for p in chunk])
            results.update({n: r.to_json() for n, r in zip(names, out, strict=True)})
            bar.update(len(chunk))
    return results
