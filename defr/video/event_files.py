"""Typed records of the video files ``defr eval-events`` and the demo read back: events, a run's frame lines and
the ground truth's detection lines, each checked once on reading (``read_events``, ``read_frame_lines``,
``read_truth_lines``) through ``defr.jsonio.read_jsonl`` (UTF-8, bounded numbers and nesting) and the box rules
of ``defr.detections``.

Refused, with one line naming the file, the line and the field:

- frames that are not whole numbers (``"3"``, ``3.5``, ``true``), negative, or beyond ``MAX_FRAME``; an event
  that starts after it ends; a frame line or truth line for a frame already given;
- ids and class ids that are not whole numbers (``"a"``, lists), scores that are not finite numbers, verbs and
  objects that are not strings;
- boxes that are not four numbers each, or inverted; per-pair (``boxes_h``, ``boxes_o``, ``hoi``, ``scores``,
  ``human_id``, ``object_id``) or per-box (``boxes``, ``labels``, ``ids``) lists of different lengths; an id
  given twice in one truth line.

The records are frozen dataclasses that also read as mappings (``event["start_frame"]``), so the evaluation's
functions take them and plain dicts alike.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from defr.detections import DetectionError, check_boxes, finite_numbers, whole_numbers
from defr.jsonio import JsonInputError, read_jsonl
from defr.video.errors import VideoError

# The largest frame number a file may give: 10^7 frames is 4.6 days at 25 fps. Bounds the work of
# anything that walks a span (and refuses a typo like 10^12 before it costs anything).
MAX_FRAME = 10_000_000


class _Record(Mapping):
    """A frozen dataclass read as a mapping of its fields (fields that are None are absent)."""

    def __getitem__(self, key: str) -> Any:
        value = getattr(self, key, None) if key in self._names() else None
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return (k for k in self._names() if getattr(self, k) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


@dataclass(frozen=True)
class Event(_Record):
    """One interaction event (``defr video --events`` or a ground-truth events file); frames inclusive.
    ``peak_score`` is None for ground truth."""

    human_id: int
    object_id: int
    hoi: int
    verb: str
    object: str
    start_frame: int
    end_frame: int
    peak_score: float | None = None


@dataclass(frozen=True)
class FrameLine(_Record):
    """One frame of a run (``defr video --frames``): per pair its boxes (0-based pixels), class, score, tracks."""

    frame: int
    boxes_h: tuple[tuple[float, ...], ...]
    boxes_o: tuple[tuple[float, ...], ...]
    hoi: tuple[int, ...]
    scores: tuple[float, ...]
    human_id: tuple[int, ...]
    object_id: tuple[int, ...]
    time_s: float = 0.0
    width: int | None = None  # of the frame, pixels (written by defr video; optional here)
    height: int | None = None


@dataclass(frozen=True)
class TruthLine(_Record):
    """One frame of the ground truth (``defr synth --video``'s detections): every annotated box, its label, its id."""

    frame: int
    boxes: tuple[tuple[float, ...], ...]
    labels: tuple[int, ...]
    ids: tuple[int, ...]


def _frame(row: Mapping, key: str, where: str) -> int:
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise VideoError(f"{where}: '{key}' must be a whole number, got {value!r}")
    if not 0 <= value <= MAX_FRAME:
        raise VideoError(f"{where}: '{key}' must be in 0..{MAX_FRAME}, got {value!r}")
    return int(value)


def _int(row: Mapping, key: str, where: str, low: int) -> int:
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise VideoError(f"{where}: '{key}' must be an integer >= {low}, got {value!r}")
    return value


def _text(row: Mapping, key: str, where: str) -> str:
    value = row[key]
    if not isinstance(value, str) or not value:
        raise VideoError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
    return value


def _missing(row: Mapping, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise VideoError(f"{where}: missing key(s) {missing}")


EVENT_KEYS = ("human_id", "object_id", "hoi", "verb", "object", "start_frame", "end_frame")


def event_from_dict(row: Mapping, where: str, predicted: bool) -> Event:
    """An ``Event`` from one JSON object (``predicted``: ``peak_score`` required); VideoError naming ``where``."""
    _missing(row, EVENT_KEYS + (("peak_score",) if predicted else ()), where)
    start, end = _frame(row, "start_frame", where), _frame(row, "end_frame", where)
    if start > end:
        raise VideoError(f"{where}: 'start_frame' {start} is after 'end_frame' {end}")
    peak = None
    if predicted:
        peak = row["peak_score"]
        if isinstance(peak, bool) or not isinstance(peak, (int, float)) or not math.isfinite(peak):
            raise VideoError(f"{where}: 'peak_score' must be a finite number, got {peak!r}")
        peak = float(peak)
    return Event(
        _int(row, "human_id", where, 0), _int(row, "object_id", where, 0), _int(row, "hoi", where, 0),
        _text(row, "verb", where), _text(row, "object", where), start, end, peak,
    )  # fmt: skip


def _boxes(value, where: str, key: str) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in box) for box in check_boxes(value, where, key).tolist())


def _same_length(where: str, lists: dict[str, tuple]) -> None:
    lengths = {k: len(v) for k, v in lists.items()}
    if len(set(lengths.values())) > 1:
        raise VideoError(f"{where}: lists of different lengths: {lengths}")


def frame_line_from_dict(row: Mapping, where: str) -> FrameLine:
    """A ``FrameLine`` from one JSON object; VideoError naming ``where`` and the field."""
    _missing(row, ("frame", "boxes_h", "boxes_o", "hoi", "scores", "human_id", "object_id"), where)
    try:
        lists = {
            "boxes_h": _boxes(row["boxes_h"], where, "boxes_h"),
            "boxes_o": _boxes(row["boxes_o"], where, "boxes_o"),
            "hoi": tuple(whole_numbers(row["hoi"], where, "hoi", low=0).tolist()),
            "scores": tuple(finite_numbers(row["scores"], where, "scores").tolist()),
            "human_id": tuple(whole_numbers(row["human_id"], where, "human_id", low=-1).tolist()),
            "object_id": tuple(whole_numbers(row["object_id"], where, "object_id", low=-1).tolist()),
        }
        time_s = float(finite_numbers([row.get("time_s", 0.0)], where, "time_s")[0])
    except DetectionError as e:
        raise VideoError(str(e)) from None
    _same_length(where, lists)
    size = {k: _int(row, k, where, 0) for k in ("width", "height") if k in row}
    return FrameLine(frame=_frame(row, "frame", where), time_s=time_s, **size, **lists)


def truth_line_from_dict(row: Mapping, where: str) -> TruthLine:
    """A ``TruthLine`` from one JSON object; VideoError naming ``where`` and the field."""
    _missing(row, ("frame", "boxes", "labels", "ids"), where)
    try:
        lists = {
            "boxes": _boxes(row["boxes"], where, "boxes"),
            "labels": tuple(whole_numbers(row["labels"], where, "labels", low=0).tolist()),
            "ids": tuple(whole_numbers(row["ids"], where, "ids", low=0).tolist()),
        }
    except DetectionError as e:
        raise VideoError(str(e)) from None
    _same_length(where, lists)
    if len(set(lists["ids"])) != len(lists["ids"]):
        raise VideoError(f"{where}: 'ids' gives an id twice: {list(lists['ids'])}")
    return TruthLine(frame=_frame(row, "frame", where), **lists)


def _read(path: str | os.PathLike, parse) -> list:
    try:
        return [parse(row, where) for where, row in read_jsonl(path)]
    except JsonInputError as e:
        raise VideoError(str(e)) from None


def _unique_frames(lines: list, path: str | os.PathLike) -> list:
    seen: set[int] = set()
    for n, line in enumerate(lines):
        if line.frame in seen:
            raise VideoError(f"{path}: frame {line.frame} has a second line (entry {n + 1})")
        seen.add(line.frame)
    return lines


def read_events(path: str | os.PathLike, predicted: bool) -> list[Event]:
    """The events of an events JSONL (``predicted``: a run's, with ``peak_score``; else ground truth)."""
    return _read(path, lambda row, where: event_from_dict(row, where, predicted))


def read_frame_lines(path: str | os.PathLike) -> list[FrameLine]:
    """The frame lines of a run's frames JSONL, each frame once."""
    return _unique_frames(_read(path, frame_line_from_dict), path)


def read_truth_lines(path: str | os.PathLike) -> list[TruthLine]:
    """The ground truth's detection lines (``boxes``, ``labels``, ``ids`` per frame), each frame once."""
    return _unique_frames(_read(path, truth_line_from_dict), path)
