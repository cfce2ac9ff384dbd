"""Reading ``model.json``, the sidecar ``defr-export`` writes beside an exported graph or engine.

It records preprocessing (input size, patch size, mean/std), the class names and their objects,
the head, the score rule, the graph's opset, inputs and outputs, and a size and SHA-256 for every
file of the export. Backends read it from the folder of the file they load and refuse a file whose
checksum does not match (a stale or foreign file). The writer is ``defr.export.sidecar``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from defr.choices import DEFAULT_MASK_MODE, resolve_mask_mode
from defr.errors import DefrError
from defr.runtime.contract import RuntimeMeta

SIDECAR_NAME = "model.json"
SIDECAR_FORMAT = "defr-export/1"


class SidecarError(DefrError, ValueError):
    """A sidecar that is missing, unreadable, of another format, or that does not describe a file."""


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sidecar(model_path: str | os.PathLike) -> dict:
    """The sidecar beside ``model_path`` (``model.json`` in its folder), format checked."""
    path = Path(model_path).parent / SIDECAR_NAME
    if not path.is_file():
        raise SidecarError(f"{model_path}: no {SIDECAR_NAME} beside it (written by defr-export with the model)")
    try:
        sidecar = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SidecarError(f"{path}: cannot read ({e})") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
        got = sidecar.get("format") if isinstance(sidecar, dict) else type(sidecar).__name__
        raise SidecarError(f"{path}: not a defr-export sidecar (format {got!r}, expected {SIDECAR_FORMAT!r})")
    return sidecar


def check_file(sidecar: dict, model_path: str | os.PathLike) -> dict:
    """The sidecar's entry for ``model_path`` after checking its SHA-256; SidecarError if it differs."""
    model_path = Path(model_path)
    entry = sidecar["files"].get(model_path.name)
    if entry is None:
        raise SidecarError(
            f"{model_path}: not listed in {SIDECAR_NAME} (it lists {sorted(sidecar['files'])}); "
            "load a file of that export or export again"
        )
    if sha256(model_path) != entry["sha256"]:
        raise SidecarError(f"{model_path}: checksum differs from {SIDECAR_NAME}: the file was changed after export")
    return entry


def file_mask_mode(sidecar: dict, requested: str | None, path) -> str:
    """The mask mode baked into an export (exports before mask modes: the default); SidecarError when
    ``requested`` (None: take the file's) differs from it (``defr.choices.resolve_mask_mode``)."""
    baked = sidecar["graph"].get("mask_mode", DEFAULT_MASK_MODE)
    return resolve_mask_mode(baked, requested, path, mismatch=SidecarError)


def runtime_meta(sidecar: dict) -> RuntimeMeta:
    """The ``RuntimeMeta`` (preprocessing, classes, objects) a sidecar records."""
    d = sidecar["input"]
    return RuntimeMeta(
        image_size=d["image_size"],
        patch_size=d["patch_size"],
        mean=tuple(d["mean"]),
        std=tuple(d["std"]),
        class_names=list(sidecar["classes"]),
        class_objects=list(sidecar["class_objects"]),
    )
