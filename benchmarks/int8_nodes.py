"""Node by node: where OpenVINO's int8 departs from what a QDQ file means.

The reference is ONNX Runtime with every graph optimization off: it runs the file's literal
QuantizeLinear / DequantizeLinear arithmetic in float (the meaning of the file). For each arithmetic
node on the image's data flow (Conv, MatMul, Add, LayerNormalization, ...), the graph is cut at that
node's output (the output becomes the graph's only output, so each runtime compiles exactly the graph
up to it, with the fusions it makes there) and run by the reference, by ONNX Runtime with its fused
integer kernels, and by OpenVINO (``INFERENCE_PRECISION_HINT`` f32: only the quantized nodes are
integer). Adding every intermediate as an extra graph output instead would change what OpenVINO fuses
(its outputs of Q/DQ-internal tensors then read as zeros): cutting is slower but measures the graph
that runs.

Per node: max and mean |Δ| against the reference, the mean as a fraction of the reference's standard
deviation, and in quantization steps (the scale of the QuantizeLinear that reads the node's output, if
one does). The first node where OpenVINO parts (its mean |Δ| over std above ``--part`` and above
``--ratio`` times ONNX Runtime's fused error at the same node) is named. ``--zero NAME`` then tests a
suspect: OpenVINO's pair logits on the whole file against the reference with the constant NAME zeroed.

    .venv/bin/python benchmarks/int8_nodes.py export/model.int8.onnx --json benchmarks/results/int8_nodes.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from defr.export.int8 import downstream_nodes
from defr.files import write_json
from defr.machine import machine_info
from defr.runtime.contract import INPUT_NAMES, example_inputs
from defr.runtime.sidecar import read_sidecar

ARITHMETIC = {
    "Conv",
    "MatMul",
    "Gemm",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "Erf",
    "LayerNormalization",
    "Softmax",
    "Einsum",
    "ReduceL2",
}


def candidates(model: onnx.ModelProto) -> list[tuple[str, str, str]]:
    """(node name, op type, output) of every float arithmetic node on the image's data flow, in graph order."""
    on_image = downstream_nodes(model.graph, ("images",))
    graph = onnx.shape_inference.infer_shapes(model).graph
    floats = {v.name for v in [*graph.value_info, *graph.output] if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    return [
        (n.name, n.op_type, n.output[0])
        for n in model.graph.node
        if n.name in on_image and n.op_type in ARITHMETIC and n.output[0] in floats
    ]


def quant_steps(model: onnx.ModelProto) -> dict[str, float]:
    """The scale of the (per-tensor) QuantizeLinear that reads each tensor."""
    constants = {t.name: t for t in model.graph.initializer}
    steps = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[1] in constants:
            scale = numpy_helper.to_array(constants[node.input[1]])
            if scale.size == 1:
                steps[node.input[0]] = float(scale)
    return steps


def cut(model: onnx.ModelProto, output: str, path: Path) -> None:
    """``model`` with ``output`` as its only output, saved to ``path`` (the runtimes drop what it does not need)."""
    cut_model = onnx.ModelProto()
    cut_model.CopyFrom(model)
    del cut_model.graph.output[:]
    cut_model.graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, None))
    onnx.save(cut_model, str(path))


def runners(threads: int):
    """(reference, ONNX Runtime fused, OpenVINO): each maps (graph path, feeds) to the graph's first output."""
    import onnxruntime as ort
    import openvino as ov

    def ort_run(optimize: bool):
        def run(path: Path, feeds: dict) -> np.ndarray:
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            if not optimize:
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            names = {i.name for i in session.get_inputs()}
            return session.run(None, {k: v for k, v in feeds.items() if k in names})[0]

        return run

    core = ov.Core()

    def ov_run(path: Path, feeds: dict) -> np.ndarray:
        props = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
        compiled = core.compile_model(core.read_model(str(path)), "CPU", props)
        names = {n for i in compiled.inputs for n in i.get_names()}
        out = compiled.create_infer_request().infer({k: v for k, v in feeds.items() if k in names})
        return np.array(out[compiled.output(0)])

    return ort_run(False), ort_run(True), ov_run


def errors(got: np.ndarray, ref: np.ndarray, step: float | None) -> dict:
    d = np.abs(got.astype(np.float64) - ref)
    finite = np.isfinite(ref)
    d, std = d[finite], float(ref[finite].std()) or 1.0
    mean = float(d.mean()) if d.size else 0.0
    return {
        "max_abs": float(d.max()) if d.size else 0.0,
        "mean_abs": mean,
        "mean_rel_std": mean / std,
        "mean_steps": mean / step if step else None,
    }


def compare(path: Path, batch: int, pairs: int, threads: int, part: float, ratio: float, log=print) -> dict:
    meta = read_sidecar(path).meta
    inputs = example_inputs(meta.image_size, batch, pairs, seed=0)
    feeds = {n: x.numpy() for n, x in zip(INPUT_NAMES, inputs, strict=True)}
    feeds["pair_index"] = feeds["pair_index"].astype(np.int64)
    model = onnx.load(str(path))
    steps = quant_steps(model)
    reference, fused, openvino = runners(threads)
    rows, first = [], None
    with tempfile.TemporaryDirectory(prefix="defr-int8-nodes-") as tmp:
        for name, op, output in candidates(model):
            graph = Path(tmp) / "cut.onnx"
            cut(model, output, graph)
            ref = reference(graph, feeds).astype(np.float64)
            row = {"node": name, "op": op, "output": output, "quant_step": steps.get(output)}
            row["ort_fused"] = errors(fused(graph, feeds), ref, steps.get(output))
            row["openvino"] = errors(openvino(graph, feeds), ref, steps.get(output))
            ov_rel, ort_rel = row["openvino"]["mean_rel_std"], row["ort_fused"]["mean_rel_std"]
            row["parts"] = ov_rel > part and ov_rel > ratio * ort_rel
            if row["parts"] and first is None:
                first = name
            rows.append(row)
            log(f"{op:18s} {name:48s} OpenVINO {ov_rel:8.4f}  ORT fused {ort_rel:8.4f}" + ("  <- parts" * row["parts"]))
    return {
        "file": str(path),
        "batch": batch,
        "pairs": pairs,
        "threads": threads,
        "part": part,
        "ratio": ratio,
        "first_parting_node": first,
        "nodes": rows,
    }


def without_constant(path: Path, name: str, batch: int, pairs: int, threads: int) -> dict:
    """OpenVINO's pair logits on the file against the reference on the file with the constant ``name`` set to
    zero: near rounding when OpenVINO ignores that constant (how the dropped Conv bias was confirmed)."""
    meta = read_sidecar(path).meta
    inputs = example_inputs(meta.image_size, batch, pairs, seed=0)
    feeds = {n: x.numpy() for n, x in zip(INPUT_NAMES, inputs, strict=True)}
    feeds["pair_index"] = feeds["pair_index"].astype(np.int64)
    model = onnx.load(str(path))
    reference, _, openvino = runners(threads)
    got = openvino(path, feeds).astype(np.float64)
    result = {"constant": name, "against_file": errors(got, reference(path, feeds).astype(np.float64), None)}
    (tensor,) = [t for t in model.graph.initializer if t.name == name]
    tensor.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(tensor)), name))
    with tempfile.TemporaryDirectory(prefix="defr-int8-nodes-") as tmp:
        onnx.save(model, str(Path(tmp) / "zeroed.onnx"))
        result["against_zeroed"] = errors(got, reference(Path(tmp) / "zeroed.onnx", feeds).astype(np.float64), None)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="a QDQ int8 graph with its model.json (model.int8.onnx)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=8, help="pairs over the batch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--part", type=float, default=0.02, help="mean |Δ| / std above which a node departs")
    parser.add_argument("--ratio", type=float, default=3.0, help="... and above this many times ORT fused's")
    parser.add_argument("--machine", default=None, help="a note on the machine for the JSON (load, sharing)")
    parser.add_argument("--json", type=Path, default=None, help="write the table here")
    parser.add_argument("--zero", default=None, help="instead: OpenVINO against the file with this constant zeroed")
    args = parser.parse_args(argv)
    if args.zero:
        result = without_constant(args.file, args.zero, args.batch, args.pairs, args.threads)
        print(result)
        result["machine"] = {**machine_info(), "note": args.machine}
        if args.json:
            write_json(result, args.json)
        return 0
    result = compare(args.file, args.batch, args.pairs, args.threads, args.part, args.ratio)
    result["machine"] = {**machine_info(), "note": args.machine}
    print(f"first node where OpenVINO departs from the file's arithmetic: {result['first_parting_node']}")
    if args.json:
        write_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
