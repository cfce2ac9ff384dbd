"""Files derived from a model file and cached beside it (ONNX Runtime's optimised graph, a compiled
model of another runtime): never loaded unless verified.

A derivative at ``path`` is stored with a record ``<path>.json`` = ``{"format", "source_sha256",
"sha256", "bytes"}``: the SHA-256 of the model file it was derived from (its name's key is derived
from that hash too) and its own. ``verified_derivative`` loads nothing: it says whether the file at
``path`` is the one the record describes, for the source the caller verified (a backend checks the
source against ``model.json`` first); a missing, foreign, stale or changed derivative — a planted
``.model.ort-<key>.onnx`` included — is removed and the caller rebuilds it. ``commit_derivative``
writes the record, then renames the new file into place, so a kill in between leaves a record
without its file or a file its record refuses, never a file taken for another.

Usage (any runtime's cache)::

    cached = folder / f".{name}.{tag}-{key}.{ext}"          # key hashes source_sha256 + settings
    if verified_derivative(cached, source_sha256):
        load(cached)
    else:
        build(source, into=tmp)
        commit_derivative(tmp, cached, source_sha256)
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from defr.files import write_json
from defr.jsonio import JsonInputError, read_json
from defr.runtime.sidecar import sha256

DERIVED_FORMAT = "defr-derived/1"
_MAX_RECORD_BYTES = 1 << 16


def record_path(path: str | os.PathLike) -> Path:
    """Where the record of the derivative ``path`` lives: ``<path>.json`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def verified_derivative(path: str | os.PathLike, source_sha256: str) -> bool:
    """True when ``path`` exists, its record names ``source_sha256`` as its source and its own SHA-256
    and size match the record; otherwise False, with the file and its record removed (a folder that
    does not let them be removed just means no cache)."""
    path, record = Path(path), record_path(path)
    if not path.is_file():
        return False
    try:
        r = read_json(record, max_bytes=_MAX_RECORD_BYTES)
        ok = (
            isinstance(r, dict)
            and r.get("format") == DERIVED_FORMAT
            and r.get("source_sha256") == source_sha256
            and r.get("bytes") == path.stat().st_size
            and r.get("sha256") == sha256(path)
        )
    except (OSError, JsonInputError):
        ok = False
    if not ok:
        remove_derivative(path)
    return ok


def commit_derivative(tmp: str | os.PathLike, path: str | os.PathLike, source_sha256: str) -> None:
    """Move the freshly written derivative ``tmp`` to ``path`` with its record (module docstring: the order)."""
    tmp = Path(tmp)
    record = {
        "format": DERIVED_FORMAT,
        "source_sha256": source_sha256,
        "sha256": sha256(tmp),
        "bytes": tmp.stat().st_size,
    }
    write_json(record, record_path(path))
    os.replace(tmp, path)


def remove_derivative(path: str | os.PathLike) -> None:
    """Remove a derivative and its record, where the folder allows it."""
    for p in (Path(path), record_path(path)):
        with contextlib.suppress(OSError):
            p.unlink(missing_ok=True)
