"""Files of the detection runtime: image lists, detection inputs, the results format.

Results format (one JSON object): ``{filename: {"boxes_h": [[x1, y1, x2, y2], ...], "boxes_o": [...],
"hoi": [class ids], "scores": [floats]}}``, boxes in 0-based pixels of the original image.

Detection inputs, one entry per image: ``{"boxes": [[x1, y1, x2, y2], ...], "labels": [...],
"scores": [...]}`` in pixels of the original image, either as a directory of JSON files named like
the image with ``.json`` (``HICO_test2015_00000001.json``) or as one JSONL file with a
``"filename"`` key per line. Labels are HICO objects (0..79) or COCO labels (``coco80``: 0..79,
``coco91``: category ids), converted on reading. An image without detections is an error: write
an entry with empty lists for images where the detector found nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from defr.errors import ConfigError, DefrError
from defr.images import ImageInputError, decode_image
from defr.runtime.pairing import DetectionError, to_hico_labels
from defr.typecheck import json_numbers

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class InputFileError(DefrError, ValueError):
    """An input file (image list, image, detections, results) that cannot be used; names the file."""


def list_images(source: str | os.PathLike) -> list[Path]:
    """A directory (its image files, sorted by name) or a text file (one path a line; relative
    paths are relative to the text file's folder; blank lines and ``#`` comments skipped)."""
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise InputFileError(f"{source}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        return paths
    if not source.is_file():
        raise InputFileError(f"{source}: no such directory or image list file")
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputFileError(
            f"{source}: not UTF-8 text (byte {e.start}); an image list holds one path a line, saved as UTF-8"
        ) from None
    paths = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line)
            paths.append(p if p.is_absolute() else source.parent / p)
    if not paths:
        raise InputFileError(f"{source}: the image list is empty")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise InputFileError(f"{source}: {len(missing)} listed image(s) do not exist: {', '.join(missing[:5])}")
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InputFileError(f"{source}: results are keyed by file name, but names repeat: {dup[:5]}")
    return paths


def read_image(path: str | os.PathLike) -> Image.Image:
    """An RGB PIL image (``defr.images.decode_image``: the one decoder); ``InputFileError`` naming the
    file if it is missing, corrupt, a decompression bomb, or of a mode that cannot be used."""
    try:
        return decode_image(path)
    except ImageInputError as e:
        raise InputFileError(str(e)) from None


def parse_detections(entry, source: str, label_space: str = "hico") -> dict:
    """One detection entry → {"boxes" [N, 4] float32, "labels" [N] int64 HICO, "scores" [N] float32}."""
    if not isinstance(entry, dict):
        raise InputFileError(f"{source}: a detection entry must be a JSON object, got {type(entry).__name__}")
    missing = [k for k in ("boxes", "labels", "scores") if k not in entry]
    if missing:
        raise InputFileError(f"{source}: detection entry lacks {missing} (needs boxes, labels, scores)")
    try:
        for field in ("boxes", "labels", "scores"):
            json_numbers(entry[field], f"{source}: {field}", integers=field == "labels")
    except ConfigError as e:
        raise InputFileError(str(e)) from None
    try:
        boxes = np.asarray(entry["boxes"], dtype=np.float32)
        scores = np.asarray(entry["scores"], dtype=np.float32)
        labels = np.asarray(entry["labels"], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputFileError(f"{source}: boxes must be [N, 4] and labels, scores [N] numbers ({e})") from None
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    try:
        labels = to_hico_labels(labels, label_space) if label_space != "hico" else labels
    except DetectionError as e:
        raise InputFileError(f"{source}: {e}") from None
    return {"boxes": boxes, "labels": labels, "scores": scores}


def load_detections(source: str | os.PathLike, filenames: Iterable[str], label_space: str = "hico") -> dict[str, dict]:
    """Detections for each of ``filenames`` (image file names) from a directory or a JSONL file.

    Every image needs an entry (empty lists when nothing was detected); missing ones raise
    ``InputFileError`` naming them. JSONL lines for images not in ``filenames`` are ignored.
    """
    source = Path(source)
    filenames = list(filenames)
    if source.is_dir():
        out, missing = {}, []
        for name in filenames:
            path = source / (Path(name).stem + ".json")
            if not path.is_file():
                missing.append(path.name)
                continue
            out[name] = parse_detections(_read_json(path), str(path), label_space)
    elif source.is_file():
        entries = _read_jsonl(source)
        out = {n: parse_detections(entries[n], f"{source} ({n})", label_space) for n in filenames if n in entries}
        missing = [n for n in filenames if n not in entries]
    else:
        raise InputFileError(f"{source}: no such detections directory or JSONL file")
    if missing:
        raise InputFileError(
            f"{source}: no detections for {len(missing)} image(s): {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "")
            + " (write an entry with empty boxes/labels/scores for images without detections)"
        )
    return out


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputFileError(f"{path}: not valid JSON ({e})") from None


def _read_jsonl(path: Path) -> dict[str, dict]:
    entries: dict[str, dict] = {}
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputFileError(f"{path}: cannot read ({e})") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputFileError(f"{path}:{i}: not valid JSON ({e})") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
            raise InputFileError(f"{path}:{i}: each line needs a string 'filename' key")
        name = Path(entry["filename"]).name
        if name in entries:
            raise InputFileError(f"{path}:{i}: second entry for {name}")
        entries[name] = entry
    return entries
