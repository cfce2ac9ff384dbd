"""``model.json``: what a runtime needs beside an exported graph or engine.

Preprocessing (input size, patch size, mean/std), the 600 class names and their objects, the
head (logit scale), the score rule, the graph's opset and shapes, the exporter's versions, and a
size and SHA-256 for every file of the export. Backends read it from the folder of the file they
load and refuse a file whose checksum does not match (a stale or foreign file).
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

from defr.errors import DefrError
from defr.runtime.detector import RuntimeMeta
from defr.runtime.pairs import PairConfig

SIDECAR_NAME = "model.json"
SIDECAR_FORMAT = "defr-export/1"
VERSIONED_PACKAGES = ("defr", "torch", "onnx", "onnxscript", "onnxruntime", "tensorrt")


class SidecarError(DefrError, ValueError):
    """A sidecar that is missing, unreadable, of another format, or that does not describe a file."""


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path, precision: str) -> dict:
    return {"precision": precision, "bytes": path.stat().st_size, "sha256": sha256(path)}


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages an export depends on (None: not installed)."""
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def build_sidecar(
    meta: RuntimeMeta,
    *,
    head: str,
    logit_scale: float,
    opset: int,
    plugin: bool,
    files: dict[str, dict],
    source: dict,
    engine: dict | None = None,
) -> dict:
    """The sidecar of one export.

    meta: preprocessing and classes; head, logit_scale: the classifier (γ, not its log); files:
    ``{file name: file_entry(...)}``; source: where the weights came from; engine: when an engine
    was built, its optimisation profile ``{input: [min, opt, max]}`` and plugin library.
    """
    pairs = PairConfig()
    return {
        "format": SIDECAR_FORMAT,
        "classes": list(meta.class_names),
        "class_objects": list(meta.class_objects),
        "input": {
            "image_size": meta.image_size,
            "patch_size": meta.patch_size,
            "mean": list(meta.mean),
            "std": list(meta.std),
            "preprocess": "RGB, resize to image_size × image_size (bicubic, aspect not kept), /255, (x - mean) / std",
        },
        "head": {"type": head, "logit_scale": logit_scale},
        "score_rule": {
            "score": "sigmoid(logit) * prior",
            "prior": "score_h^prior_exponent * score_o^prior_exponent if the class's object is the pair's, else 0",
            "prior_exponent": pairs.prior_exponent,
            "detection_score_threshold": pairs.score_threshold,
            "nms_threshold": pairs.nms_threshold,
            "max_humans": pairs.max_humans,
            "max_objects": pairs.max_objects,
        },
        "graph": {
            "inputs": {
                "images": ["B", 3, meta.image_size, meta.image_size],
                "boxes_h": ["P", 4],
                "boxes_o": ["P", 4],
                "pair_index": ["P"],
            },
            "outputs": {"pair_logits": ["P", len(meta.class_names)], "image_logits": ["B", len(meta.class_names)]},
            "opset": opset,
            "plugin": plugin,
        },
        "engine": engine,
        "files": files,
        "exporter": package_versions(),
        "source": source,
    }


def write_sidecar(sidecar: dict, path: str | os.PathLike) -> Path:
    """Write ``sidecar`` as indented JSON (into the export's staging folder, moved in with the rest)."""
    path = Path(path)
    path.write_text(json.dumps(sidecar, indent=2))
    return path


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
