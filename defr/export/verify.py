"""Verification of an exported graph: ``onnx.checker``, then ONNX Runtime against PyTorch.

Errors are measured over several (B, P) shapes of random images and boxes, one session, so the
dynamic axes are exercised too. Tolerances: fp32 max |Δ| <= 1e-4 on the logits; fp16
max |Δ| / max |reference| <= 1e-2 for each output; int8 <= 1e-1 relative (a sanity bound; the int8
accuracy gate judges it on real images).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from defr.choices import DEFAULT_MASK_MODE
from defr.errors import ConfigError
from defr.export.errors import VerificationError
from defr.export.plugin_node import register_schema
from defr.model import DEFR
from defr.optional import import_onnxruntime
from defr.runtime.contract import INPUT_NAMES, OUTPUT_NAMES, example_inputs
from defr.runtime.onnx_session import SessionConfig, make_session

SHAPES = ((1, 1), (3, 7), (3, 225))  # (B, P)
LATENCY_SHAPE = (1, 16)
LATENCY_REPEATS = 3


@dataclass(frozen=True)
class Tolerance:
    """``abs``: max |Δ| <= limit; ``rel``: max |Δ| / max |reference| <= limit (per output)."""

    kind: str
    limit: float

    def error(self, got: np.ndarray, ref: np.ndarray) -> float:
        """inf when either side has a NaN or inf: a non-finite output never passes."""
        if not (np.isfinite(got).all() and np.isfinite(ref).all()):
            return float("inf")
        diff = float(np.abs(got.astype(np.float64) - ref).max(initial=0.0))
        if self.kind == "abs":
            return diff
        return diff / max(float(np.abs(ref).max(initial=0.0)), 1e-12)


# int8: a sanity bound that catches a broken graph (random inputs, random boxes); its accuracy is
# judged on real images by the int8 accuracy gate (defr.export.accuracy).
TOLERANCES = {"fp32": Tolerance("abs", 1e-4), "fp16": Tolerance("rel", 1e-2), "int8": Tolerance("rel", 1e-1)}


@dataclass
class Comparison:
    """ONNX Runtime vs PyTorch for one file: the max error of each output over ``shapes``."""

    file: str
    precision: str
    tolerance: Tolerance
    shapes: list[tuple[int, int]]
    max_abs: dict[str, float] = field(default_factory=dict)
    error: dict[str, float] = field(default_factory=dict)  # in the tolerance's kind
    latency_ms: float | None = None

    @property
    def passed(self) -> bool:
        return all(e <= self.tolerance.limit for e in self.error.values())

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "precision": self.precision,
            "tolerance": {"kind": self.tolerance.kind, "limit": self.tolerance.limit},
            "shapes": [list(s) for s in self.shapes],
            "max_abs": self.max_abs,
            "error": self.error,
            "latency_ms": self.latency_ms,
            "passed": self.passed,
        }


def check_graph(path: str | os.PathLike) -> None:
    """``onnx.checker`` with full shape inference; VerificationError naming the file."""
    register_schema()  # so a plugin node is checked against its schema, not rejected as unknown
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise VerificationError(f"{Path(path).name}: onnx.checker failed: {str(e).splitlines()[0]}") from None


def ort_session(path: str | os.PathLike, providers: list[str] | None = None):
    """An ONNX Runtime session (CPU unless ``providers`` say otherwise) with the runtime's options
    (``defr.runtime.onnx_session``), so an int8 graph is checked with the integer kernels it will run
    with; no optimised-model cache (the file is in the export's staging folder)."""
    import_onnxruntime("verifying an export in ONNX Runtime (or skip it: --no-verify)")
    return make_session(path, providers, SessionConfig(cache=False))


def feeds(inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    return {name: x.numpy() for name, x in zip(INPUT_NAMES, inputs, strict=True)}


def compare_with_torch(
    path: str | os.PathLike,
    model: DEFR,
    precision: str,
    shapes: tuple[tuple[int, int], ...] = SHAPES,
    seed: int = 0,
    providers: list[str] | None = None,
    mask_mode: str = DEFAULT_MASK_MODE,
) -> Comparison:
    """Run ``path`` in ONNX Runtime and ``model.forward_pairs`` (``mask_mode``) in PyTorch on the same random inputs."""
    session = ort_session(path, providers)
    tolerance = TOLERANCES[precision]
    result = Comparison(Path(path).name, precision, tolerance, list(shapes))
    s = model.cfg.image_size
    for k, (b, p) in enumerate(shapes):
        images, boxes_h, boxes_o, pair_index = example_inputs(s, b, p, seed=seed + k)
        order = torch.randperm(p, generator=torch.Generator().manual_seed(seed + k))  # unsorted pair_index too
        inputs = (images, boxes_h[order], boxes_o[order], pair_index[order])
        with torch.no_grad():
            reference = model.forward_pairs(*inputs, with_image_logits=True, mask_mode=mask_mode)
        outputs = session.run(list(OUTPUT_NAMES), feeds(inputs))
        for name, got, ref in zip(OUTPUT_NAMES, outputs, reference, strict=True):
            ref = ref.double().numpy()
            result.max_abs[name] = max(result.max_abs.get(name, 0.0), _max_abs_diff(got, ref))
            result.error[name] = max(result.error.get(name, 0.0), tolerance.error(got, ref))
    result.latency_ms = ort_latency_ms(session, s)
    return result


def _max_abs_diff(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref|, inf when either has a NaN or inf (NaN compares as no difference otherwise)."""
    if not (np.isfinite(got).all() and np.isfinite(ref).all()):
        return float("inf")
    return float(np.abs(got - ref).max(initial=0.0))


def ort_latency_ms(session, image_size: int, shape: tuple[int, int] = LATENCY_SHAPE) -> float:
    """Median wall time of ``LATENCY_REPEATS`` runs at ``shape`` (B, P), after one warm-up run."""
    inputs = feeds(example_inputs(image_size, *shape))
    session.run(None, inputs)
    times = []
    for _ in range(LATENCY_REPEATS):
        start = time.perf_counter()
        session.run(None, inputs)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def compare_detections(reference: dict[str, dict], other: dict[str, dict]) -> dict:
    """Two results files (``{filename: {boxes_h, boxes_o, hoi, scores}}``) of the same images and detections.

    Returns the max |Δscore| over triplets (a triplet only one side has counts its whole score),
    how many images have the same top triplet, and the images compared.
    """
    if set(reference) != set(other):
        raise ConfigError(f"results cover different images: {sorted(set(reference) ^ set(other))[:5]}")
    max_diff, same_top = 0.0, 0
    for name, ref in reference.items():
        a, b = _triplet_scores(ref), _triplet_scores(other[name])
        for key in a.keys() | b.keys():
            max_diff = max(max_diff, abs(a.get(key, 0.0) - b.get(key, 0.0)))
        same_top += _top(ref) == _top(other[name])
    return {"images": len(reference), "max_abs_diff_score": max_diff, "same_top_triplet": same_top}


def _triplet_scores(entry: dict) -> dict[tuple, float]:
    keys = zip(map(tuple, entry["boxes_h"]), map(tuple, entry["boxes_o"]), entry["hoi"], strict=True)
    return dict(zip(keys, entry["scores"], strict=True))


def _top(entry: dict) -> tuple | None:
    if not entry["hoi"]:
        return None
    return tuple(entry["boxes_h"][0]), tuple(entry["boxes_o"][0]), entry["hoi"][0]
