"""Writing ``model.json``, the sidecar of an export (the reader, used by backends, is ``defr.runtime.sidecar``).

Preprocessing (input size, patch size, mean/std), the class names and their objects, the head
(logit scale), the score rule, the graph's opset, inputs and outputs, the exporter's versions,
and a size and SHA-256 for every file of the export.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from defr.machine import package_versions
from defr.runtime.contract import RuntimeMeta
from defr.runtime.pairing import PairConfig
from defr.runtime.sidecar import SIDECAR_FORMAT, SIDECAR_NAME, sha256

__all__ = ["SIDECAR_FORMAT", "SIDECAR_NAME", "build_sidecar", "file_entry", "write_sidecar"]


def file_entry(path: Path, precision: str) -> dict:
    return {"precision": precision, "bytes": path.stat().st_size, "sha256": sha256(path)}


def build_sidecar(
    meta: RuntimeMeta,
    *,
    head: str,
    logit_scale: float,
    opset: int,
    plugin: bool,
    mask_mode: str,
    files: dict[str, dict],
    source: dict,
    engine: dict | None = None,
    int8: dict | None = None,
) -> dict:
    """The sidecar of one export.

    meta: preprocessing and classes; head, logit_scale: the classifier (γ, not its log); mask_mode:
    the pair mask baked into the graph (``hard`` or ``released``); files:
    ``{file name: file_entry(...)}``; source: where the weights came from; engine: when an engine
    was built, its optimisation profile ``{input: [min, opt, max]}`` and plugin library; int8: when
    ``model.int8.onnx`` was written, how it was quantized and calibrated and the accuracy gate's
    measurements (``defr.export.int8``, ``defr.export.accuracy``).
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
            "mask_mode": mask_mode,
        },
        "engine": engine,
        "int8": int8,
        "files": files,
        "exporter": package_versions(),
        "source": source,
    }


def write_sidecar(sidecar: dict, path: str | os.PathLike) -> Path:
    """Write ``sidecar`` as indented JSON (into the export's staging folder, moved in with the rest)."""
    path = Path(path)
    path.write_text(json.dumps(sidecar, indent=2))
    return path
