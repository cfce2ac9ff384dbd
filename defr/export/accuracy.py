"""The accuracy gate of ``defr-export --int8``: the int8 graph against the float32 one on held-out images.

The held-out images are calibration-set images that calibration did not see
(``CalibrationSet.split``). Each exported file is loaded as every user loads it
(``defr.runtime.load_backend``: checked against the ``model.json`` beside it, run by ONNX Runtime
with the runtime's session options on the CPU).

- Logits, one graph call per image with its pairs as the runtime makes them: max and mean |Δ| of
  the pair and image logits against float32 (int8, and fp16 when exported), and the top-1
  agreement of pair classes (the fraction of pairs whose arg-max class is float32's). An image
  without pairs is fed one whole-image dummy pair (as the runtime does); that row is not counted.
- With image labels: HICO mAP (``defr.eval.classification.hico_metrics``, 11-point AP, ambiguous
  labels skipped) of the image logits, over the dataset's classes the model has.
- With HICO-DET ground truth: HICO-DET mAP (full / rare / non-rare, the official protocol) of
  ``run_detection`` through ``HOIDetector``, with the same detections (the held-out images' GT
  boxes) for every file.

The drop of a metric is ``100 · (float32 − int8)`` mAP points; the gate fails when a drop exceeds
``max_drop``. Data without labels has no mAP: the gate then rests on nothing but the logits and
says so in its ``note`` (it passes).

OpenVINO rows (``openvino``; when the package is installed): the same images, metrics and drops
against ONNX Runtime's float32 for ``model.int8.onnx`` run by OpenVINO (``int8``) and ``model.onnx``
with OpenVINO's bf16 inference-precision hint (``bf16``; only on a CPU with bf16 instructions, else
the note says it was not run). Each row has its own verdict; the export fails only on the int8 row of
the runtime the file is made for (``runtime``): ONNX Runtime's for ``model.int8.onnx`` (the other
verdicts tell whether to run it in OpenVINO on this CPU), OpenVINO's for NNCF's ``model.int8.nncf.onnx``.

``run_held_out`` is the measurement and ``gate_score`` the gate as one number: NNCF's accuracy control
(``defr.export.nncf_int8``) scores its candidates with it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from defr.eval.classification import hico_metrics
from defr.eval.hicodet import hicodet_metrics
from defr.export.calibration import CalibrationSet, GraphFeeds
from defr.export.defaults import DEFAULT_MAX_DROP
from defr.export.errors import VerificationError
from defr.export.nncf_int8 import AccuracyControl, OpenVinoGraph
from defr.optional import MissingDependency, import_openvino
from defr.runtime import load_backend
from defr.runtime.contract import INPUT_NAMES, PairBackend, RuntimeMeta
from defr.runtime.detect import run_detection
from defr.runtime.detector import HOIDetector
from defr.runtime.openvino_backend import cpu_has_bf16

GATED_METRICS = ("hico_mAP", "hicodet_full")
RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


@dataclass
class GateResult:
    """What the gate measured (``model.json``'s ``int8.gate``).

    logits: precision → {max_abs_pair, mean_abs_pair, max_abs_image, mean_abs_image, top1_agreement}
    against float32; metrics: precision → {hico_mAP, hicodet_full, hicodet_rare, hicodet_non_rare}
    (fractions, None when the data cannot give it); drop: gated metric → float32 − int8 in points.
    """

    images: int
    pairs: int
    max_drop: float
    logits: dict[str, dict[str, float]] = field(default_factory=dict)
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    drop: dict[str, float] = field(default_factory=dict)
    note: str = ""
    # --- OpenVINO rows: precision → {logits, metrics, drop, passed}, as the fields above ---
    openvino: dict[str, dict] = field(default_factory=dict)

    runtime: str = "onnxruntime"  # whose int8 row is the verdict: onnxruntime, or openvino (an NNCF file)

    @property
    def gated_drop(self) -> dict[str, float]:
        """The drops the verdict rests on: the int8 row of the runtime the file is made for."""
        return self.openvino["int8"]["drop"] if self.runtime == "openvino" else self.drop

    @property
    def passed(self) -> bool:
        return all(d <= self.max_drop for d in self.gated_drop.values())

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def summary(self) -> str:
        """One line for the export log."""
        lg = self.logits.get("int8", {})
        parts = [
            f"{self.images} held-out images, {self.pairs} pairs: int8 vs fp32 max |Δ| pair logits "
            f"{lg.get('max_abs_pair', float('nan')):.3g} (mean {lg.get('mean_abs_pair', float('nan')):.3g}), "
            f"top-1 agreement {100 * lg.get('top1_agreement', float('nan')):.1f} %"
        ]
        for metric in GATED_METRICS:
            if metric in self.drop:
                values = " / ".join(
                    f"{p} {_points(self.metrics[p].get(metric))}" for p in self.metrics if metric in self.metrics[p]
                )
                parts.append(f"{metric} {values} (drop {self.drop[metric]:+.2f})")
        for p, ov_row in self.openvino.items():
            drops = ", ".join(f"{m} drop {d:+.2f}" for m, d in ov_row["drop"].items()) or "no mAP"
            verdict = "passes" if ov_row["passed"] else "FAILS"
            parts.append(
                f"OpenVINO {p}: max |Δ| pair logits {ov_row['logits']['max_abs_pair']:.3g}, {drops} ({verdict})"
            )
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)


def _points(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def accuracy_gate(
    files: dict[str, str | os.PathLike],
    held_out: CalibrationSet,
    max_drop: float = DEFAULT_MAX_DROP,
    log: Callable[[str], None] = print,
    runtime: str = "onnxruntime",
) -> GateResult:
    """Compare the exported ``files`` (name → path, each listed in the ``model.json`` beside it;
    ``fp32`` and ``int8`` required) on ``held_out``.

    runtime: whose int8 row the verdict is (the runtime the int8 file is made for): ``onnxruntime``
    (ONNX Runtime's quantizer), or ``openvino`` (NNCF's file; OpenVINO is then required).
    Returns the measurements; raises ``VerificationError`` when a gated metric drops by more than
    ``max_drop`` points (the caller writes nothing then).
    """
    backends = {p: load_backend(path) for p, path in files.items()}
    notes: list[str] = []
    ov_backends = openvino_backends(files, notes, required=runtime == "openvino")
    run = run_held_out({**backends, **ov_backends}, held_out)
    outputs, real_pairs, metrics = run.outputs, run.real_pairs, run.metrics
    notes += run.notes
    result = GateResult(images=len(held_out), pairs=sum(real_pairs), max_drop=max_drop, runtime=runtime)
    for p in backends:
        if p != "fp32":
            result.logits[p] = _logit_agreement(outputs[p], outputs["fp32"], real_pairs)
    result.metrics = {p: metrics[p] for p in backends}
    result.drop = _drops(metrics["fp32"], metrics["int8"])
    for p in ov_backends:
        drop = _drops(metrics["fp32"], metrics[p])
        result.openvino[p.removeprefix(OPENVINO_ROW)] = {
            "logits": _logit_agreement(outputs[p], outputs["fp32"], real_pairs),
            "metrics": metrics[p],
            "drop": drop,
            "passed": all(d <= max_drop for d in drop.values()),
        }
    if held_out.labels is not None and not result.drop:
        notes.append("no class of the held-out images has a positive: no mAP, the gate rests on the logits")
    result.note = "; ".join(notes)
    log(f"accuracy gate: {result.summary()} -> " + ("passed" if result.passed else "FAILED"))
    if not result.passed:
        drop = result.gated_drop
        worst = max(drop, key=drop.get)
        raise VerificationError(
            f"{Path(files['int8']).name}: int8 in {RUNTIME_NAMES[runtime]} loses {drop[worst]:.2f} {worst} points "
            f"against fp32 on "
            f"{result.images} held-out calibration images, more than --int8-max-drop {max_drop:g}; calibrate on "
            "more or more representative data (--calibration, --calibration-images), or allow a larger drop"
        )
    return result


def _drops(ref: dict[str, float | None], got: dict[str, float | None]) -> dict[str, float]:
    """Gated metric → 100 · (ref − got) mAP points, for the metrics both have."""
    return {m: 100 * (ref[m] - got[m]) for m in GATED_METRICS if ref.get(m) is not None and got.get(m) is not None}


@dataclass
class HeldOutRun:
    """What every backend gave on the held-out images: outputs (backend → one [pair logits, image
    logits] per image), the real pairs of each image (no dummy pair), metrics (backend → the
    ``GateResult.metrics`` keys) and notes on what could not be measured."""

    outputs: dict[str, list[list[np.ndarray]]]
    real_pairs: list[int]
    metrics: dict[str, dict[str, float | None]]
    notes: list[str]


def run_held_out(backends: dict[str, PairBackend], held_out: CalibrationSet) -> HeldOutRun:
    """The gate's measurement: every backend on every held-out image, one graph call each with its pairs
    as the runtime makes them (logits), then the HICO mAP of the image logits and the HICO-DET mAP of
    ``run_detection`` where the data has labels / ground truth (module docstring)."""
    meta = next(iter(backends.values())).meta
    outputs: dict[str, list[list[np.ndarray]]] = {p: [] for p in backends}
    real_pairs, notes = [], []
    for feeds in GraphFeeds(held_out, meta):
        real_pairs.append(_real_pairs(feeds, meta.image_size))
        inputs = [torch.from_numpy(feeds[name]) for name in INPUT_NAMES]
        for p, backend in backends.items():
            outputs[p].append([y.numpy() for y in backend(*inputs)])
    metrics: dict[str, dict[str, float | None]] = {p: {} for p in backends}
    if held_out.labels is not None:
        columns = _shared_classes(meta.class_names, held_out.class_names or [])
        for p in backends:
            scores = np.stack([out[1][0] for out in outputs[p]])
            metrics[p]["hico_mAP"] = _hico_map(scores, held_out, columns)
    else:
        notes.append("no image labels in the calibration data: no mAP, the gate rests on the logits")
    if held_out.annotations is not None:
        for p, backend in backends.items():
            results = run_detection(HOIDetector(backend), held_out.paths, held_out.detections, progress=False)
            results = _to_dataset_classes(results, meta.class_names, held_out.class_names or [])
            m = hicodet_metrics(held_out.annotations, results)
            metrics[p].update({f"hicodet_{k}": m.get(k) for k in ("full", "rare", "non_rare")})
    return HeldOutRun(outputs, real_pairs, metrics, notes)


def gate_score(backend: PairBackend, reference: PairBackend, held_out: CalibrationSet) -> tuple[float, list[float]]:
    """The gate as one number, for NNCF's accuracy control: 1 − the worst drop of a gated metric of
    ``backend`` against ``reference`` (float32) on ``held_out`` (a fraction: 0.99 = one mAP point lost;
    1 when the images give no gated metric), and per image minus the mean |Δ pair logit| against it."""
    run = run_held_out({"fp32": reference, "candidate": backend}, held_out)
    drop = _drops(run.metrics["fp32"], run.metrics["candidate"])
    got, ref = run.outputs["candidate"], run.outputs["fp32"]
    per_image = [
        -float(np.abs(g[0][:n] - r[0][:n]).mean()) if n else 0.0
        for g, r, n in zip(got, ref, run.real_pairs, strict=True)
    ]
    return 1.0 - max(drop.values(), default=0.0) / 100, per_image


def nncf_accuracy_control(
    fp32_path: str | os.PathLike, held_out: CalibrationSet, meta: RuntimeMeta, mask_mode: str, max_drop: float
) -> AccuracyControl | None:
    """NNCF's accuracy control by ``gate_score`` against the float32 graph's metrics (run in OpenVINO, as
    the candidates are) on ``held_out``; None for held-out images without labels or ground truth (no mAP)."""
    if held_out.labels is None and held_out.annotations is None:
        return None
    fp32 = OpenVinoGraph(onnx.load(str(fp32_path)), meta, mask_mode)
    return AccuracyControl(
        images=len(held_out),
        score=lambda backend, index: gate_score(backend, fp32, held_out.subset(index)),
        max_drop=max_drop,
        meta=meta,
        mask_mode=mask_mode,
    )


OPENVINO_ROW = "openvino-"  # prefix of the OpenVINO rows among the gate's outputs


def openvino_backends(
    files: dict[str, str | os.PathLike], notes: list[str], required: bool = False
) -> dict[str, PairBackend]:
    """``openvino-int8`` (the int8 file; ``openvino-NAME`` for every other file NAME ``int8…`` of ``files``) and
    ``openvino-bf16`` (the fp32 file, bf16 hint), each checked against the ``model.json`` beside it; what
    cannot run here (no ``openvino``, no bf16 instructions) is said in ``notes``. required:
    MissingDependency without ``openvino`` (the gate's verdict is its row)."""
    try:
        ov = import_openvino("the accuracy gate's OpenVINO rows")
    except MissingDependency:
        if required:
            raise
        notes.append('OpenVINO rows not run: openvino is not installed (pip install "defr[openvino]")')
        return {}
    rows = {
        f"{OPENVINO_ROW}{p}": load_backend(path, runtime="openvino")
        for p, path in files.items()
        if p.startswith("int8")
    }
    if cpu_has_bf16(ov.Core()):
        rows[f"{OPENVINO_ROW}bf16"] = load_backend(files["fp32"], runtime="openvino", precision="bf16")
    else:
        notes.append("OpenVINO bf16 row not run: this CPU has no bf16 instructions")
    return rows


def _real_pairs(feeds: dict[str, np.ndarray], image_size: int) -> int:
    """Pairs of one call, not counting the runtime's dummy whole-image pair of an image without pairs."""
    whole = np.array([0.0, 0.0, image_size, image_size], dtype=np.float32)
    p = feeds["pair_index"].shape[0]
    dummy = p == 1 and np.array_equal(feeds["boxes_h"][0], whole) and np.array_equal(feeds["boxes_o"][0], whole)
    return 0 if dummy else p


def _logit_agreement(got: list[list[np.ndarray]], ref: list[list[np.ndarray]], real_pairs: list[int]) -> dict:
    pair = [np.abs(g[0][:n] - r[0][:n]) for g, r, n in zip(got, ref, real_pairs, strict=True)]
    image = [np.abs(g[1] - r[1]) for g, r in zip(got, ref, strict=True)]
    pair_diff = np.concatenate([d.reshape(-1) for d in pair] or [np.zeros(0)])
    image_diff = np.concatenate([d.reshape(-1) for d in image])
    agree = [g[0][:n].argmax(1) == r[0][:n].argmax(1) for g, r, n in zip(got, ref, real_pairs, strict=True)]
    agree_all = np.concatenate(agree or [np.zeros(0, bool)])
    return {
        "max_abs_pair": float(pair_diff.max(initial=0.0)),
        "mean_abs_pair": float(pair_diff.mean()) if pair_diff.size else 0.0,
        "max_abs_image": float(image_diff.max(initial=0.0)),
        "mean_abs_image": float(image_diff.mean()),
        "top1_agreement": float(agree_all.mean()) if agree_all.size else 1.0,
    }


def _shared_classes(model_classes: list[str], data_classes: list[str]) -> list[tuple[int, int]]:
    """(model column, dataset column) of every dataset class the model has, matched by name."""
    column = {name: i for i, name in enumerate(model_classes)}
    return [(column[name], j) for j, name in enumerate(data_classes) if name in column]


def _hico_map(scores: np.ndarray, held_out: CalibrationSet, columns: list[tuple[int, int]]) -> float | None:
    if not columns:
        return None
    model_cols, data_cols = (list(c) for c in zip(*columns, strict=True))
    objects = np.asarray(held_out.class_objects)[data_cols] if held_out.class_objects is not None else None
    return hico_metrics(scores[:, model_cols], held_out.labels[:, data_cols], objects)["mAP"]


def _to_dataset_classes(results: dict, model_classes: list[str], data_classes: list[str]) -> dict:
    """Results with the model's class ids → the dataset's (by name); triplets of classes the dataset lacks dropped."""
    if list(model_classes) == list(data_classes):
        return results
    to_data = {m: d for m, d in _shared_classes(model_classes, data_classes)}
    out = {}
    for name, entry in results.items():
        keep = [k for k, c in enumerate(entry["hoi"]) if c in to_data]
        out[name] = {
            "boxes_h": [entry["boxes_h"][k] for k in keep],
            "boxes_o": [entry["boxes_o"][k] for k in keep],
            "hoi": [to_data[entry["hoi"][k]] for k in keep],
            "scores": [entry["scores"][k] for k in keep],
        }
    return out
