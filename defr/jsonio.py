"""The one JSON reader for everything ``defr`` takes from outside: detections, results, ``model.json``,
checkpoint headers, video detections, requests.

``json.loads`` alone turns hostile input into crashes far from the file: a 5,000-digit integer
raises ``ValueError`` (Python's int-string limit), a 400-digit one an ``OverflowError`` wherever it
is later made a float, ``1e400`` becomes ``inf``, ``NaN`` / ``Infinity`` are accepted, and 100,000
nested brackets raise ``RecursionError``. Here each of those is refused while parsing, with a
``JsonInputError`` (a ``ConfigError``) that names the file or field: integers must fit in 64 bits,
floats must be finite, the non-standard constants are refused, nesting deep enough to exhaust the
parser's recursion is refused, a key given twice in one object is refused, and text must be UTF-8.

``dump_json`` is the one JSON writer: it refuses what the reader refuses (NaN, Infinity: ``json.dumps``
would write them, and the file could not be read back), naming the key path of the first such value.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from defr.errors import ConfigError, DefrError

_INT_LIMIT = 2**63


class JsonInputError(ConfigError):
    """JSON text that is not valid, or holds values no ``defr`` file may hold; the message names where."""


def _parse_int(text: str) -> int:
    digits = text.lstrip("-")
    if len(digits) > 19 or abs(int(text)) >= _INT_LIMIT:
        shown = text if len(text) <= 24 else f"{text[:20]}... ({len(digits)} digits)"
        raise JsonInputError(f"integer {shown} does not fit in 64 bits")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonInputError(f"number {text[:24]} is out of range (not a finite float)")
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object; a key given twice is refused (``json`` would keep the last silently: one image of a
    results file given twice would lose its first entry)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                shown = key if len(key) <= 60 else key[:60] + "..."
                raise JsonInputError(f"key {shown!r} appears twice in one object")
            seen.add(key)
    return out


def _parse_constant(name: str) -> Any:
    raise JsonInputError(f"{name} is not a JSON number (NaN and Infinity are not allowed)")


def dump_json(obj: Any, where: str, indent: int | None = None) -> str:
    """``obj`` as JSON text (numpy scalars as numbers); ConfigError naming ``where`` and the key path
    (``['results'][3]['scores'][0]``) of the first NaN or Infinity, which JSON cannot hold."""
    try:
        return json.dumps(obj, indent=indent, default=float, allow_nan=False)
    except ValueError as e:
        try:
            path = _first_non_finite(obj, "")
        except RecursionError:  # a circular reference, which json.dumps reports itself
            raise e from None
        if path is None:
            raise
        key, value = path
        shown = key or "the value"
        raise ConfigError(f"cannot write {where}: {shown} is {value} (JSON has no NaN or Infinity)") from None


def _first_non_finite(obj: Any, key: str) -> tuple[str, float] | None:
    """(key path, value) of the first non-finite number in ``obj``, depth first; None if every number is finite."""
    if isinstance(obj, dict):
        items = ((f"{key}[{k!r}]", v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        items = ((f"{key}[{i}]", v) for i, v in enumerate(obj))
    else:
        if isinstance(obj, (str, bool, int)) or obj is None:
            return None
        try:
            number = float(obj)  # floats and numpy scalars, as the writer's ``default=float``
        except (TypeError, ValueError):
            return None
        return None if math.isfinite(number) else (key, number)
    for k, v in items:
        found = _first_non_finite(v, k)
        if found is not None:
            return found
    return None


def parse_json(text: str | bytes, where: str) -> Any:
    """Parse JSON ``text`` (str, or UTF-8 bytes) from ``where`` (a file name, ``"line 3 of x.jsonl"``,
    ``"request body"``); JsonInputError naming ``where`` for anything refused (module docstring)."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise JsonInputError(f"{where}: not UTF-8 text (byte {e.start})") from None
    try:
        value = json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
            object_pairs_hook=_object,
        )
    except JsonInputError as e:
        raise JsonInputError(f"{where}: {e}") from None
    except RecursionError:
        raise JsonInputError(f"{where}: nested too deeply to read") from None
    except json.JSONDecodeError as e:
        raise JsonInputError(f"{where}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    return value


def read_json(path: str | os.PathLike, max_bytes: int | None = None, error: type[DefrError] | None = None) -> Any:
    """Read and parse the JSON file ``path`` (refusals as ``parse_json``); ``max_bytes`` refuses larger files
    before reading them. OSError for a file that cannot be read. ``error``: the reader's own class instead, for
    both (``<path>: cannot read (<why>)``), so every reader names a file the same way."""
    if error is None:
        return _read_json(Path(path), max_bytes)
    try:
        return _read_json(Path(path), max_bytes)
    except JsonInputError as e:
        raise error(str(e)) from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None


def _read_json(path: Path, max_bytes: int | None) -> Any:
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise JsonInputError(f"{path}: {path.stat().st_size} bytes, more than the {max_bytes} allowed")
    return parse_json(path.read_bytes(), str(path))


def read_jsonl(
    path: str | os.PathLike, max_bytes: int | None = None, skip_invalid: bool = False
) -> Iterator[tuple[str, dict]]:
    """The JSON objects of the JSON-lines file ``path``, one a line, as ``(where, object)`` with ``where``
    ``"<path>, line <n>"`` (for messages); blank lines are skipped.

    Each line must be UTF-8 (refused naming the line and byte) and one JSON object read with
    ``parse_json``'s bounds; ``max_bytes`` refuses larger files before reading them. JsonInputError naming
    the file and line otherwise (``skip_invalid``: such lines are skipped, as a log a kill cut short needs);
    OSError for a file that cannot be read.
    """
    path = Path(path)
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise JsonInputError(f"{path}: {path.stat().st_size} bytes, more than the {max_bytes} allowed")
    for n, line in enumerate(path.read_bytes().split(b"\n"), 1):
        if not line.strip():
            continue
        where = f"{path}, line {n}"
        try:
            row = parse_json(line, where)  # UTF-8 checked per line, so the message names the line
            if not isinstance(row, dict):
                raise JsonInputError(f"{where}: expected a JSON object, got {type(row).__name__}")
        except JsonInputError:
            if skip_invalid:
                continue
            raise
        yield where, row
