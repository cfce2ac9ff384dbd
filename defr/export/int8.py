"""``model.int8.onnx``: ONNX Runtime's quantization of the exported float32 graph.

Static (default): QDQ format (QuantizeLinear / DequantizeLinear pairs around the quantized nodes,
standard ONNX ops, so the file stays portable), int8 weights per output channel (symmetric),
uint8 activations per tensor (asymmetric), ranges calibrated (min / max by default) on real
preprocessed frames and their pairs (``defr.export.calibration``). ONNX Runtime fuses each
DequantizeLinear → MatMul → QuantizeLinear into an integer kernel at load time (u8 × s8 with
VNNI where the CPU has it). Dynamic (no calibration data): int8 weights per channel, activations
quantized per call (``MatMulInteger``); MatMul and Gemm only.

Which nodes are quantized is decided per *group* (``node_groups``), by measurement
(``benchmarks/int8_accuracy.py``, ``benchmarks/int8_speed.py``; ``docs/export.md`` § INT8):

- ``conv``: the patch embedding / convolutional stem;
- ``linear``: MatMul / Gemm with a constant weight, except the classifier: every block's QKV,
  out-projection and MLP — about 90 % of the work;
- ``attention``: MatMuls of two activations (q·kᵀ and softmax·v of every block, the pair CLS scores);
- ``head``: the cosine classifier (the normalised feature × the normalised class proxies);
- ``norm``: LayerNormalization and Softmax (not the pair softmax: the −∞ of the box mask has no
  uint8 range).

``DEFAULT_GROUPS`` are ``conv`` and ``linear``: quantizing ``attention`` or ``norm`` made the graph
slower and less accurate, ``head`` added error for no speed. Never quantized: the box → patch-mask
arithmetic and the attention bias (they do not depend on the image: every node outside the image's
data flow is left alone), the GELU, residual additions and the feature normalisation (no quantized
kernel would run them faster), and the Conv biases: each is a float ``Add`` after its Conv
(``separate_conv_bias``), because OpenVINO dropped a quantized Conv's int32 bias.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from defr.export.errors import ExportError
from defr.machine import cpu_has_int8_dot_product
from defr.optional import require

INT8_FILE = "model.int8.onnx"
QUANT_METHODS = ("static", "dynamic")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
NODE_GROUPS = ("conv", "linear", "attention", "head", "norm")
DEFAULT_GROUPS = ("conv", "linear")
LINEAR_OPS = ("MatMul", "Gemm")
NORM_OPS = ("LayerNormalization", "Softmax")
CALIBRATION_CHUNK = 8  # images per calibration pass


@dataclass(frozen=True)
class Int8Config:
    """How ``model.int8.onnx`` is made.

    method: ``static`` (calibrated QDQ) or ``dynamic`` (no calibration); groups: the node groups to
    quantize (``NODE_GROUPS``; dynamic quantization takes ``linear`` and ``head`` only);
    calibration_method: ``minmax``, ``percentile`` (99.999th) or ``entropy``; per_channel: int8
    weights per output channel (else per tensor); reduce_range: 7-bit weights (ONNX Runtime's
    ``reduce_range``), None: on when the exporting CPU has no int8 dot-product instruction (VNNI, AMX),
    whose u8 × s8 kernels saturate with full 8-bit weights (docs/export.md, INT8).
    """

    method: str = "static"
    groups: tuple[str, ...] = DEFAULT_GROUPS
    calibration_method: str = "minmax"
    per_channel: bool = True
    reduce_range: bool | None = None

    @property
    def reduced_range(self) -> bool:
        return (not cpu_has_int8_dot_product()) if self.reduce_range is None else self.reduce_range

    def __post_init__(self) -> None:
        if self.method not in QUANT_METHODS:
            raise ExportError(f"int8 method must be one of {QUANT_METHODS}, not {self.method!r}")
        unknown = sorted(set(self.groups) - set(NODE_GROUPS))
        if unknown or not self.groups:
            raise ExportError(f"int8 groups must be among {NODE_GROUPS}, got {list(self.groups)}")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ExportError(
                f"calibration method must be one of {CALIBRATION_METHODS}, not {self.calibration_method!r}"
            )

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "groups": list(self.groups),
            "calibration_method": self.calibration_method if self.method == "static" else None,
            "per_channel": self.per_channel,
            "reduce_range": self.reduced_range,
        }


def import_quantization():
    """``onnxruntime.quantization``; MissingDependency with the install line when it is missing."""
    return require("onnxruntime.quantization", "--int8 (ONNX Runtime's quantization tools)", "export", "onnxruntime")


# --- which nodes ---------------------------------------------------------------------------------------------


def downstream_nodes(graph: onnx.GraphProto, inputs: tuple[str, ...]) -> set[str]:
    """Names of the nodes that read (transitively) any of the graph ``inputs``."""
    tainted, names = set(inputs), set()
    for node in graph.node:  # ONNX graphs are topologically sorted
        if any(i in tainted for i in node.input):
            tainted.update(node.output)
            names.add(node.name)
    return names


def node_groups(model: onnx.ModelProto) -> dict[str, list[str]]:
    """The quantizable nodes of an exported pair graph by group (module docstring), names in graph order.

    Run on the graph as it is quantized (after ``prepare``: the classifier's normalised weight is then
    a constant). Node names must be unique and non-empty (the exporter's are).
    """
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    constants.update(o for n in graph.node if n.op_type == "Constant" for o in n.output)
    on_image = downstream_nodes(graph, ("images",))  # the rest is box arithmetic or weight preparation
    on_boxes = downstream_nodes(graph, ("boxes_h", "boxes_o"))
    head = head_matmuls(graph)
    groups: dict[str, list[str]] = {g: [] for g in NODE_GROUPS}
    for node in graph.node:
        if node.name not in on_image:
            continue
        if node.op_type == "Conv":
            groups["conv"].append(node.name)
        elif node.op_type in LINEAR_OPS:
            constant_weight = len(node.input) > 1 and node.input[1] in constants
            key = "head" if node.name in head else "linear" if constant_weight else "attention"
            groups[key].append(node.name)
        elif node.op_type in NORM_OPS and node.name not in on_boxes:
            # not the pair softmax: its input holds the mask's -inf, which has no uint8 range
            groups["norm"].append(node.name)
    return groups


def head_matmuls(graph: onnx.GraphProto) -> set[str]:
    """The MatMul / Gemm nodes that reach a graph output through no other MatMul: the classifier."""
    producer = {o: n for n in graph.node for o in n.output}
    found, seen = set(), set()
    stack = [o.name for o in graph.output]
    while stack:
        value = stack.pop()
        node = producer.get(value)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in LINEAR_OPS:
            found.add(node.name)
            continue
        stack.extend(node.input)
    return found


# --- quantization ----------------------------------------------------------------------------------------------


def prepare(fp32_path: str | os.PathLike, out_path: str | os.PathLike, conv_bias_as_add: bool = True) -> Path:
    """ONNX Runtime's pre-processing for quantization: ONNX shape inference and the basic graph
    optimisations (constant folding, standard ops only), so weights computed from weights become
    constants and every tensor has a shape; then, with ``conv_bias_as_add``, each Conv's bias as a
    separate float Add (``separate_conv_bias``: for ONNX Runtime's quantizer, which quantizes biases)."""
    quantization = import_quantization()
    quantization.quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)
    model = onnx.load(str(out_path))
    if conv_bias_as_add and separate_conv_bias(model.graph):
        onnx.save(model, str(out_path))
    return Path(out_path)


def separate_conv_bias(graph: onnx.GraphProto) -> int:
    """Every ``Conv`` with a constant bias becomes ``Conv`` (no bias) → ``Add`` (the bias as ``[1, C, 1, 1]``),
    in place; returns how many. The ``Add`` stays float (it is in no node group).

    Why: with the bias inside the quantized Conv, ONNX Runtime's quantizer writes it as an int32
    ``DequantizeLinear`` input, and OpenVINO (2026.4, CPU) drops that bias when the Conv's output is
    also read by a ``ShapeOf`` (its shape optimisations take the batch size from the stem's last Conv
    once the graph reads it from the image): the int8 file then computed the model without tiny-vit's
    stem bias, mean |Δ pair logit| 0.9 against ONNX Runtime's 0.08 (``benchmarks/int8_nodes.py``,
    docs/export.md § INT8). A float ``Add`` after the Conv is computed by both runtimes as written.
    """
    constants = {t.name: t for t in graph.initializer}
    nodes, count = [], 0
    for node in graph.node:
        nodes.append(node)
        if node.op_type != "Conv" or len(node.input) < 3 or node.input[2] not in constants:
            continue
        bias = onnx.numpy_helper.to_array(constants[node.input[2]])
        bias_4d = f"{node.input[2]}_as_add"
        graph.initializer.append(onnx.numpy_helper.from_array(bias.reshape(1, -1, 1, 1), bias_4d))
        output, without = node.output[0], f"{node.output[0]}_without_bias"
        del node.input[2]
        node.output[0] = without
        nodes.append(onnx.helper.make_node("Add", [without, bias_4d], [output], name=f"{node.name}_bias"))
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def quantize(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    cfg: Int8Config,
    calibration: Sequence[dict[str, np.ndarray]] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Quantize the float32 graph at ``fp32_path`` into ``out_path``.

    calibration: graph feeds (``{input name: array}``, one backend call each; computed when indexed,
    ``defr.export.calibration.GraphFeeds``) for static quantization; ignored for dynamic. They are
    run in chunks of up to ``CALIBRATION_CHUNK`` (ONNX Runtime merges the ranges of the chunks; one
    image a chunk for the histogram methods, whose chunks must have tensors of one shape), so
    calibration never holds every activation of every image. Returns what the sidecar
    records: the configuration, the node groups quantized and kept in float with their node counts.
    """
    quantization = import_quantization()
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="defr-int8-") as tmp:
        prepared = prepare(fp32_path, Path(tmp) / "prepared.onnx")
        groups = node_groups(onnx.load(str(prepared), load_external_data=False))
        wanted = cfg.groups if cfg.method == "static" else tuple(g for g in cfg.groups if g in ("linear", "head"))
        nodes = [name for g in wanted for name in groups[g]]
        if not nodes:
            raise ExportError(f"{Path(fp32_path).name}: no node of the groups {list(wanted)} to quantize")
        if cfg.method == "static":
            if calibration is None:
                raise ExportError("static int8 quantization needs calibration data")
            with warnings.catch_warnings():
                # ONNX Runtime computes parameters for every calibrated tensor of the op types, also ones it
                # will not quantize, such as the pair softmax's input with the mask's -inf (0 / inf: NaN).
                # The scales the graph uses are checked below (_check_scales).
                warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
                _quantize_static(quantization, prepared, out_path, cfg, calibration, nodes, wanted)
        else:
            quantization.quantize_dynamic(
                str(prepared),
                str(out_path),
                op_types_to_quantize=list(LINEAR_OPS),
                nodes_to_quantize=nodes,
                per_channel=cfg.per_channel,
                reduce_range=cfg.reduced_range,
                weight_type=quantization.QuantType.QInt8,
            )
    _check_scales(out_path)
    counts = {g: len(groups[g]) for g in NODE_GROUPS}
    kept = [f"{g} {counts[g]}" for g in NODE_GROUPS if g not in wanted and counts[g]]
    log(
        f"{out_path.name}: {cfg.method} quantization of {len(nodes)} nodes ("
        + ", ".join(f"{g} {counts[g]}" for g in wanted)
        + "); kept in float: "
        + ", ".join([*kept, "the box arithmetic"])
    )
    return {
        **cfg.to_dict(),
        "format": "QDQ" if cfg.method == "static" else "QOperator (MatMulInteger)",
        "weights": ("int8 in a 7-bit range" if cfg.reduced_range else "int8")
        + ", symmetric, "
        + ("per output channel" if cfg.per_channel else "per tensor"),
        "activations": "uint8, asymmetric, per tensor, " + ("calibrated" if cfg.method == "static" else "per call"),
        "conv_bias": "float Add after the Conv",
        "quantized": {g: counts[g] for g in wanted},
        "kept_float": {g: counts[g] for g in NODE_GROUPS if g not in wanted},
    }


def _quantize_static(quantization, prepared, out_path, cfg, calibration, nodes, wanted) -> None:
    quantization.quantize_static(
        str(prepared),
        str(out_path),
        _Reader(calibration),
        quant_format=quantization.QuantFormat.QDQ,
        op_types_to_quantize=sorted(_op_types(wanted)),  # also what is calibrated: only these
        nodes_to_quantize=nodes,
        per_channel=cfg.per_channel,
        reduce_range=cfg.reduced_range,
        activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8,
        calibrate_method=_calibrate_method(quantization, cfg.calibration_method),
        # histograms stack a chunk's tensors, which differ in shape (P pairs per image): one image a chunk then
        extra_options={
            "CalibStridedMinMax": _chunk(len(calibration)) if cfg.calibration_method == "minmax" else 1,
            "CalibPercentile": 99.999,
        },
    )


def _op_types(groups: tuple[str, ...]) -> set[str]:
    types = {"conv": {"Conv"}, "linear": set(LINEAR_OPS), "attention": set(LINEAR_OPS), "head": set(LINEAR_OPS)}
    return set().union(*(types.get(g, set(NORM_OPS)) for g in groups))


def _check_scales(path: Path) -> None:
    """Every quantization scale finite and positive: a tensor whose calibrated range is empty or infinite
    would otherwise become NaN in the integer graph."""
    model = onnx.load(str(path), load_external_data=False)
    constants = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[1] in constants:
            scale = onnx.numpy_helper.to_array(constants[node.input[1]])
            if not (np.isfinite(scale).all() and (scale > 0).all()):
                raise ExportError(f"{path.name}: node {node.name} got a quantization scale of {scale.min()}")


def _calibrate_method(quantization, name: str):
    methods = quantization.CalibrationMethod
    return {"minmax": methods.MinMax, "percentile": methods.Percentile, "entropy": methods.Entropy}[name]


def _chunk(n: int) -> int:
    """The largest divisor of ``n`` up to ``CALIBRATION_CHUNK`` (ONNX Runtime wants chunks that divide the data)."""
    return max(k for k in range(1, min(n, CALIBRATION_CHUNK) + 1) if n % k == 0)


class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader`` over a sequence of feeds, read a chunk at a
    time (duck-typed: ``quantize_static`` calls ``__len__``, ``set_range`` and ``get_next``)."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]):
        self._feeds = feeds
        self._next, self._end = 0, len(feeds)

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, min(end_index, len(self._feeds))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        self._next += 1
        return self._feeds[self._next - 1]
