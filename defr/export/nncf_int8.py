"""``model.int8.nncf.onnx``: OpenVINO's own quantizer, NNCF, on the exported float32 graph (``--quantizer nncf``).

``defr.export.int8`` quantizes with ONNX Runtime's tools, for ONNX Runtime's kernels. NNCF places its
quantizers where OpenVINO's int8 kernels want them (its transformer patterns), smooths the activation
outliers of every MatMul into its weights (SmoothQuant) and corrects the biases that quantization moves
(fast bias correction). It is run on the ONNX graph (NNCF's ONNX backend), so the result is a QDQ ONNX
file: OpenVINO and ONNX Runtime both read it, it is listed and checked in ``model.json`` like every
other file, and measured here it ran under OpenVINO as fast as the same model as OpenVINO IR
(docs/export.md § INT8 with NNCF).

What is quantized: what NNCF's ``ModelType.TRANSFORMER`` patterns pick among the nodes on the image's
data flow, except the classifier (``defr.export.int8``: the ``head`` group added error for no speed);
the box → patch-mask arithmetic never (it does not depend on the image). Calibrated on the graph
inputs ``HOIDetector`` feeds (``GraphFeeds``), the same images as ONNX Runtime's quantizer.

Accuracy control: with a ``validation`` function (the accuracy gate's own measurement on the held-out
images, ``defr.export.accuracy.nncf_validation``), ``nncf.quantize_with_accuracy_control`` reverts the
quantizers that cost most to float until the gated metric drops by no more than ``max_drop`` (or
``max_reverted`` reverts were tried); without one (no labels to score), plain ``nncf.quantize``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from defr.export.errors import ExportError
from defr.export.int8 import downstream_nodes, head_matmuls, prepare
from defr.machine import cpu_has_int8_dot_product
from defr.optional import import_openvino, require
from defr.runtime.contract import INPUT_NAMES, OUTPUT_NAMES, PairBackend, RuntimeMeta
from defr.runtime.openvino_backend import OpenVinoConfig

NNCF_FILE = "model.int8.nncf.onnx"
OVERFLOW_FIXES = ("enable", "first_layer_only", "disable")


def import_nncf():
    """``nncf``; MissingDependency with the install line when it is missing."""
    return require("nncf", "--quantizer nncf (OpenVINO's quantizer, NNCF)", "nncf")


@dataclass(frozen=True)
class NncfConfig:
    """How NNCF quantizes (the sidecar's ``int8`` record lists every field).

    smooth_quant_alpha: SmoothQuant's α for MatMul (NNCF's transformer default 0.95; None: off);
    fast_bias_correction: NNCF's fast bias correction (False: its slower full one); overflow_fix: 7-bit
    weights against the u8 × s8 saturation of CPUs without an int8 dot product, ``enable`` (every
    layer), ``first_layer_only`` or ``disable``; None: ``enable`` when the exporting CPU has no VNNI /
    AMX, else ``disable`` (as ``Int8Config.reduce_range``); max_reverted: at most this many quantizers
    reverted to float by accuracy control.
    """

    smooth_quant_alpha: float | None = 0.95
    fast_bias_correction: bool = True
    overflow_fix: str | None = None
    max_reverted: int = 8

    def __post_init__(self) -> None:
        if self.overflow_fix is not None and self.overflow_fix not in OVERFLOW_FIXES:
            raise ExportError(f"NNCF overflow fix must be one of {OVERFLOW_FIXES}, not {self.overflow_fix!r}")
        if self.smooth_quant_alpha is not None and not 0.0 <= self.smooth_quant_alpha <= 1.0:
            raise ExportError(f"SmoothQuant alpha must be in [0, 1] (or None: off), not {self.smooth_quant_alpha}")
        if self.max_reverted < 0:
            raise ExportError(f"NNCF max_reverted must be >= 0, not {self.max_reverted}")

    @property
    def overflow(self) -> str:
        if self.overflow_fix is not None:
            return self.overflow_fix
        return "disable" if cpu_has_int8_dot_product() else "enable"

    def to_dict(self) -> dict:
        return {
            "quantizer": "nncf",
            "method": "static",
            "model_type": "transformer",
            "preset": "mixed",
            "smooth_quant_alpha": self.smooth_quant_alpha,
            "fast_bias_correction": self.fast_bias_correction,
            "overflow_fix": self.overflow,
            "max_reverted": self.max_reverted,
        }


@dataclass
class AccuracyControl:
    """NNCF's accuracy control, driven by the accuracy gate.

    images: how many held-out images (NNCF's validation items are their indices); score: (a candidate
    backend, image indices) → (the gate on those images as one number, higher is better; one value per
    image for NNCF's choice of the images it ranks quantizers on), ``defr.export.accuracy.gate_score``;
    max_drop: mAP points; meta, mask_mode: of the exported graph.
    """

    images: int
    score: Callable[[PairBackend, list[int]], tuple[float, list[float]]]
    max_drop: float
    meta: RuntimeMeta
    mask_mode: str

    def validate(self, model: onnx.ModelProto, items) -> tuple[float, list[float]]:
        """NNCF's ``validation_fn`` on the held-out images ``items`` (indices): the candidate graph run by
        OpenVINO, the runtime it is made for. NNCF ranks quantizers on subsets by this metric (its ranking
        by output error supports only its OpenVINO backend, not the ONNX one used here)."""
        return self.score(OpenVinoGraph(model, self.meta, self.mask_mode), [int(i) for i in items])


class OpenVinoGraph:
    """An ONNX graph held in memory (an NNCF candidate) compiled by OpenVINO for the CPU as a pair
    backend (as ``OpenVinoBackend`` runs an exported file; no sidecar: the graph was never written)."""

    accepts_no_pairs = False
    name = "openvino"
    precision = "int8"
    device = torch.device("cpu")

    def __init__(self, model: onnx.ModelProto, meta: RuntimeMeta, mask_mode: str):
        ov = import_openvino("NNCF's accuracy control (candidates run in OpenVINO)")
        core = ov.Core()
        graph = core.read_model(io.BytesIO(model.SerializeToString()))
        self.compiled = core.compile_model(graph, "CPU", OpenVinoConfig().properties("int8"))
        self.meta, self.mask_mode = meta, mask_mode

    def __call__(self, images, boxes_h, boxes_o, pair_index) -> tuple[torch.Tensor, torch.Tensor]:
        arrays = (images, boxes_h, boxes_o, pair_index)
        dtypes = (np.float32, np.float32, np.float32, np.int64)
        feeds = {n: x.numpy().astype(t) for n, x, t in zip(INPUT_NAMES, arrays, dtypes, strict=True)}
        out = self.compiled(feeds)
        pair_logits, image_logits = (np.array(out[self.compiled.output(n)], np.float32) for n in OUTPUT_NAMES)
        return torch.from_numpy(pair_logits), torch.from_numpy(image_logits)


def quantize_nncf(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    cfg: NncfConfig,
    calibration: Sequence[dict[str, np.ndarray]],
    control: AccuracyControl | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Quantize the float32 graph at ``fp32_path`` with NNCF into ``out_path`` (QDQ ONNX).

    calibration: graph feeds, one backend call each (``GraphFeeds``); control: accuracy control by the
    gate (None: plain ``nncf.quantize``). Returns what the sidecar records.
    """
    nncf = import_nncf()
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="defr-nncf-") as tmp:
        # constant folding (the classifier's normalised weight becomes a constant), Conv biases as float Adds
        graph = onnx.load(str(prepare(fp32_path, Path(tmp) / "prepared.onnx", conv_bias_as_add=False)))
    ignored = _ignored_nodes(graph)
    kwargs = dict(
        model_type=nncf.ModelType.TRANSFORMER,
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(calibration),
        fast_bias_correction=cfg.fast_bias_correction,
        ignored_scope=nncf.IgnoredScope(names=sorted(ignored), validate=False),
    )
    advanced = _advanced(nncf, cfg)
    dataset = nncf.Dataset(calibration)
    restorer: list[str] = []
    if control is None:
        with _nncf_messages([]):
            quantized = nncf.quantize(graph, dataset, advanced_parameters=advanced, **kwargs)
    else:
        from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

        with _nncf_messages(restorer):
            quantized = nncf.quantize_with_accuracy_control(
                graph,
                dataset,
                nncf.Dataset(list(range(control.images))),
                control.validate,
                max_drop=control.max_drop / 100,
                drop_type=nncf.DropType.ABSOLUTE,
                advanced_quantization_parameters=advanced,
                advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                    max_num_iterations=cfg.max_reverted
                ),
                **kwargs,
            )
    onnx.save(quantized, str(out_path))
    counts = _counts(quantized)
    log(
        f"{out_path.name}: NNCF quantization ({counts['quantized_nodes']} nodes with int8 inputs, "
        f"SmoothQuant {'α ' + str(cfg.smooth_quant_alpha) if cfg.smooth_quant_alpha is not None else 'off'}, "
        f"{'fast ' if cfg.fast_bias_correction else ''}bias correction, overflow fix {cfg.overflow}"
        + (", accuracy control" if control else ", no accuracy control (no labels to score)")
        + f"); kept in float: the classifier and the box arithmetic ({len(ignored)} nodes)"
    )
    for message in restorer:
        log(f"  NNCF accuracy control: {message[:200]}")
    return {
        **cfg.to_dict(),
        "nncf": nncf.__version__,
        "format": "QDQ",
        "weights": "int8, symmetric, per output channel"
        + (", 7-bit range" if cfg.overflow == "enable" else ", first layer 7-bit" if "first" in cfg.overflow else ""),
        "activations": "uint8 / int8 as NNCF's mixed preset places them, per tensor, calibrated",
        "conv_bias": "float, in the Conv (NNCF quantizes no bias)",
        "accuracy_control": None
        if control is None
        else {
            "validation": "the accuracy gate's worst gated mAP drop, in OpenVINO",
            "max_drop": control.max_drop,
            "log": restorer,
        },
        **counts,
    }


class _Messages(logging.Handler):
    def __init__(self, into: list[str]):
        super().__init__(logging.INFO)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(word in message for word in RESTORER_WORDS):
            self.into.append(" ".join(message.split()))  # NNCF lists reverted operations on lines of their own


RESTORER_WORDS = (
    "Metric of",
    "Accuracy drop",
    "quantized operations",
    "everted",
    "Algorithm completed",
    "could not",
    "Maximum number",
)


@contextlib.contextmanager
def _nncf_messages(into: list[str]):
    """NNCF's own log lines silenced (the export logs its own), its accuracy-control results kept in ``into``."""
    logger = logging.getLogger("nncf")
    levels = [(h, h.level) for h in logger.handlers]
    old_level = logger.level
    for h, _ in levels:
        h.setLevel(logging.ERROR)
    handler = _Messages(into)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        for h, level in levels:
            h.setLevel(level)


def _advanced(nncf, cfg: NncfConfig):
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        OverflowFix,
    )

    alpha = -1.0 if cfg.smooth_quant_alpha is None else cfg.smooth_quant_alpha  # NNCF: negative = off
    return AdvancedQuantizationParameters(
        overflow_fix=OverflowFix(cfg.overflow), smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alpha)
    )


def _ignored_nodes(graph: onnx.ModelProto) -> set[str]:
    """Nodes NNCF must leave in float: all off the image's data flow (box arithmetic, weight preparation)
    and the classifier MatMul."""
    on_image = downstream_nodes(graph.graph, ("images",))
    off_image = {n.name for n in graph.graph.node if n.name not in on_image}
    return off_image | head_matmuls(graph.graph)


def _counts(model: onnx.ModelProto) -> dict:
    """How many nodes read a DequantizeLinear output (compute in int8), and the Q/DQ pairs."""
    graph = model.graph
    dq_out = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    quantized = [n for n in graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")]
    quantized = [n for n in quantized if any(i in dq_out for i in n.input)]
    ops: dict[str, int] = {}
    for n in quantized:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {
        "quantized_nodes": len(quantized),
        "quantized_ops": dict(sorted(ops.items())),
        "quantize_linear": sum(n.op_type == "QuantizeLinear" for n in graph.node),
    }
