"""Files of the detection runtime: image lists, detection inputs, the results format.

Results format (one JSON object): ``{filename: {"boxes_h": [[x1, y1, x2, y2], ...], "boxes_o": [...],
"hoi": [class ids], "scores": [floats]}}``, boxes in 0-based pixels of the original image.

Detections files: the one reader of both layouts, each entry ``{"boxes": [[x1, y1, x2, y2], ...],
"labels": [...], "scores": [...]}`` (optional ``"track_ids"``) in pixels of the original image, made a
``defr.detections.Detections`` (its rules, its one label-space conversion) and parsed with
``defr.jsonio`` (huge integers, ``1e400``, NaN, deep nesting refused by name):

- by image (``defr detect``, ``load_detections``): a directory of JSON files named like the image with
  ``.json`` (``HICO_test2015_00000001.json``; two images of one stem, ``a.jpg`` and ``a.png``, are
  refused), or one JSONL file with a ``"filename"`` key per line;
- by frame (``defr video --detector detections:FILE``, ``load_frame_detections``): JSONL with a
  ``"frame"`` key per line, or JSON (a list of such objects, or an object keyed by frame number).

Labels are HICO objects (0..79) or COCO labels (``coco80``: 0..79, ``coco91``: category ids),
converted on reading. An image or frame without detections is an error: write an entry with empty
lists where the detector found nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from defr.detections import DEFAULT_LABEL_SPACE, DetectionError, Detections, check_label_space
from defr.errors import DefrError
from defr.images import ImageInputError, decode_image
from defr.jsonio import JsonInputError, read_json, read_jsonl

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


def load_detections(
    source: str | os.PathLike, filenames: Iterable[str], label_space: str = DEFAULT_LABEL_SPACE
) -> dict[str, Detections]:
    """Detections for each of ``filenames`` (image file names) from a directory or a JSONL file.

    Every image needs an entry (empty lists when nothing was detected); missing ones raise
    ``InputFileError`` naming them. JSONL lines for images not in ``filenames`` are ignored.
    """
    check_label_space(label_space)
    source = Path(source)
    filenames = list(filenames)
    if source.is_dir():
        _check_stems(source, filenames)
        out, missing = {}, []
        for name in filenames:
            path = source / (Path(name).stem + ".json")
            if not path.is_file():
                missing.append(path.name)
                continue
            out[name] = _detections(_read_json(path), str(path), label_space)
    elif source.is_file():
        entries = _read_jsonl(source, "filename")
        out = {n: _detections(entries[n][1], f"{entries[n][0]} ({n})", label_space) for n in filenames if n in entries}
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


def _check_stems(source: Path, filenames: list[str]) -> None:
    """A detections folder gives one ``STEM.json`` per image: two images of one stem (``a.jpg``, ``a.png``)
    would both take its boxes, so they are refused."""
    first: dict[str, str] = {}
    for name in filenames:
        stem = Path(name).stem
        if stem in first:
            raise InputFileError(
                f"{source}: images {first[stem]!r} and {name!r} would both take {stem}.json; rename one, "
                "or give the detections as a JSONL file keyed by file name"
            )
        first[stem] = name


def load_frame_detections(path: str | os.PathLike, label_space: str = DEFAULT_LABEL_SPACE) -> dict[int, Detections]:
    """``{frame: Detections}`` from a video's detections file: JSONL (one ``{"frame", "boxes", "labels",
    "scores"}`` a line), or JSON (a list of such objects, or ``{"<frame>": {"boxes", ...}}``).

    Frames are whole numbers >= 0 (decode order); each appears once. ``InputFileError`` names the line
    or entry for anything refused (the same rules as ``load_detections``).
    """
    check_label_space(label_space)
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        by_frame = _read_jsonl(path, "frame")
        entries = [(where, entry) for where, entry in by_frame.values()]
    else:
        data = _read_json(path)
        if isinstance(data, dict):
            entries = [(f"{path}, frame {k!r}", _keyed_frame(k, v, path)) for k, v in data.items()]
        elif isinstance(data, list):
            entries = [(f"{path}, entry {n}", e) for n, e in enumerate(data)]
        else:
            raise InputFileError(f"{path}: expected a list of frames or an object keyed by frame number")
    out: dict[int, Detections] = {}
    for where, entry in entries:
        if not isinstance(entry, dict) or "frame" not in entry:
            raise InputFileError(f"{where}: needs 'frame', 'boxes', 'labels' and 'scores'")
        frame = _frame(entry["frame"], where)
        if frame in out:
            raise InputFileError(f"{where}: frame {frame} appears twice")
        out[frame] = _detections(entry, f"{where} (frame {frame})", label_space)
    return out


def _keyed_frame(key: str, value, path: Path) -> dict:
    if not isinstance(value, dict):
        raise InputFileError(f"{path}, frame {key!r}: a detection entry must be a JSON object")
    if not (key.isascii() and key.isdigit()):
        raise InputFileError(f"{path}: frame keys must be whole numbers >= 0, got {key!r}")
    return {**value, "frame": int(key)}


def _frame(value, where: str) -> int:
    """A frame number: a whole number >= 0 (``3`` or ``3.0``); InputFileError naming ``where`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise InputFileError(f"{where}: 'frame' must be a whole number >= 0, got {value!r}")
    return int(value)


def _detections(entry, where: str, label_space: str) -> Detections:
    try:
        return Detections.from_dict(entry, label_space, where)
    except DetectionError as e:
        raise InputFileError(str(e)) from None


def _read_json(path: Path):
    try:
        return read_json(path)
    except JsonInputError as e:
        raise InputFileError(str(e)) from None
    except OSError as e:
        raise InputFileError(f"{path}: cannot read ({e.strerror or e})") from None


def _read_jsonl(path: Path, key: str) -> dict:
    """``{entry[key]: (where, entry)}`` of a JSONL file (``defr.jsonio.read_jsonl``: blank lines skipped);
    ``key`` must be a string (``filename``: its base name is the key) or a frame number, once each."""
    entries: dict = {}
    try:
        for where, entry in read_jsonl(path):
            if key == "filename":
                if not isinstance(entry.get("filename"), str):
                    raise InputFileError(f"{where}: each line needs a string 'filename' key")
                name = Path(entry["filename"]).name
            else:
                if "frame" not in entry:
                    raise InputFileError(f"{where}: needs 'frame', 'boxes', 'labels' and 'scores'")
                name = _frame(entry["frame"], where)
            if name in entries:
                what = name if key == "filename" else f"frame {name}"
                first = entries[name][0].removeprefix(f"{path}, ")
                raise InputFileError(f"{where}: second entry for {what} (first at {first})")
            entries[name] = (where, entry)
    except JsonInputError as e:
        raise InputFileError(str(e)) from None
    except OSError as e:
        raise InputFileError(f"{path}: cannot read ({e.strerror or e})") from None
    return entries
