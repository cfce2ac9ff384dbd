"""The front door for opening a model (``defr.runtime.registry``): one table of runtimes, each choice
checked once with one message for every entry point, and a sidecar's claims checked against the graph."""

from __future__ import annotations

import dataclasses
import shutil
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from defr.choices import FILE_PRECISION, PRECISIONS
from defr.cli import main
from defr.errors import ConfigError
from defr.runtime import RUNTIMES, HOIDetector, ModelOptions, load_backend
from defr.runtime.graph_claims import onnx_facts
from defr.runtime.registry import CHECKPOINT, runtime_for
from defr.runtime.sidecar import SidecarError, read_sidecar

BAD_CHOICES = {"--runtime": "tvm", "--precision": "fp64", "--mask-mode": "soft"}
PYTHON_NAMES = {"--runtime": "runtime", "--precision": "precision", "--mask-mode": "mask_mode"}


def _python_message(option: str, value: str, path) -> str:
    with pytest.raises(ConfigError) as e:
        HOIDetector.from_onnx(path, **{PYTHON_NAMES[option]: value})
    return str(e.value)


def _cli_outputs(option: str, value: str, tmp_path, monkeypatch) -> dict[str, str]:
    """What ``detect``, ``video``, ``serve`` and ``bench`` print for one bad model choice."""
    model = str(tmp_path / "model.onnx")  # never read: the choice is refused first
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "dets").mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path)
    # serve must refuse before Ray: the module that imports Ray cannot be imported in this test
    monkeypatch.setitem(sys.modules, "defr.serve.deployment", None)
    monkeypatch.setitem(sys.modules, "defr.serve.server", None)
    commands = {
        "detect": ["detect", "--model", model, "--images", "images", "--detections", "dets", "--out", "r.json"],
        "video": ["video", "frames", "--model", model, "--events", "e.jsonl"],
        "serve": ["serve", "--model", model],
        "bench": ["bench", "--model", model, "--json", "b.json"],
    }
    outputs = {}
    for name, args in commands.items():
        r = CliRunner().invoke(main, [*args, option, value])
        assert r.exit_code == 1, (name, r.output, r.exception)
        outputs[name] = r.output
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "b.json").exists()
    return outputs


@pytest.mark.parametrize("option", list(BAD_CHOICES))
def test_a_bad_choice_is_one_identical_line_from_every_entry_point(option, tmp_path, monkeypatch):
    value = BAD_CHOICES[option]
    message = _python_message(option, value, tmp_path / "model.onnx")
    assert "\n" not in message and repr(value) in message
    outputs = _cli_outputs(option, value, tmp_path, monkeypatch)
    assert outputs == dict.fromkeys(outputs, f"Error: {message}\n")


def test_the_one_messages_name_the_choices():
    for field, value, choices in (
        ("runtime", "tvm", tuple(RUNTIMES)),
        ("precision", "fp64", (FILE_PRECISION, *PRECISIONS)),
        ("mask_mode", "soft", ("hard", "released")),
    ):
        with pytest.raises(ConfigError) as e:
            ModelOptions(**{field: value})
        assert str(e.value) == f"{field} must be one of {choices}, not {value!r}"


def test_each_file_kind_has_a_default_runtime_and_a_runtime_refuses_other_kinds(tmp_path):
    assert runtime_for("m.safetensors").name == "torch" and runtime_for("m.pth").name == "torch"
    assert runtime_for("m.onnx").name == "onnxruntime" and runtime_for("m.engine").name == "tensorrt"
    assert runtime_for("m.onnx", "openvino").name == "openvino"
    with pytest.raises(ConfigError, match=r"m.safetensors: runtime 'openvino' applies to exported \.onnx files"):
        runtime_for("m.safetensors", "openvino")
    with pytest.raises(ConfigError, match="runtime 'torch' applies to checkpoints"):
        runtime_for("m.onnx", "torch")
    assert all(kind == CHECKPOINT or kind.startswith(".") for row in RUNTIMES.values() for kind in row.files)
    with pytest.raises(ConfigError, match=r"runtime 'onnxruntime' applies to exported \.onnx files"):
        HOIDetector.from_onnx(tmp_path / "c.safetensors")  # from_onnx means ONNX, never a checkpoint


def test_precision_means_the_file_or_an_explicit_value(tmp_path):
    assert ModelOptions().precision == FILE_PRECISION
    ckpt = tmp_path / "c.safetensors"
    with pytest.raises(ConfigError, match="PyTorch runs this fp32 file at fp32 or fp16 or bf16, not int8"):
        load_backend(ckpt, precision="int8")  # refused before the file is read


def test_another_runtimes_option_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match="providers is ONNX Runtime's option, not PyTorch's"):
        load_backend(tmp_path / "c.safetensors", providers=["CPUExecutionProvider"])


# --- the graph's own facts -------------------------------------------------------------------------------------


def _graph(path, outside: float | None = None, dtype=TensorProto.FLOAT, quantized: bool = False, plugin: str = ""):
    """A small graph with what an export writes: the pair bias Where(visible, 0, outside), float16 weights,
    QDQ nodes, or the plugin node with its mask_mode attribute."""
    nodes, inits = (
        [],
        [numpy_helper.from_array(np.zeros(3, np.float16 if dtype == TensorProto.FLOAT16 else np.float32), "w")],
    )
    if outside is not None:
        inits += [numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
        inits += [numpy_helper.from_array(np.array(outside, np.float32), "outside")]
        nodes.append(helper.make_node("Where", ["visible", "zero", "outside"], ["bias"]))
    if quantized:
        inits += [
            numpy_helper.from_array(np.array(0.1, np.float32), "s"),
            numpy_helper.from_array(np.array(0, np.int8), "z"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        ]
    if plugin:
        nodes.append(helper.make_node("PairMaskedAttention", ["x"], ["p"], domain="defr", mask_mode=plugin))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])], [], inits)
    onnx.save(helper.make_model(graph), str(path))
    return str(path)


def test_graph_facts_read_what_the_exporter_writes(tmp_path):
    cases = {
        "hard.onnx": ({"outside": -np.inf}, ("fp32", {"hard"})),
        "released.onnx": ({"outside": 1.0}, ("fp32", {"released"})),
        "fp16.onnx": ({"outside": -np.inf, "dtype": TensorProto.FLOAT16}, ("fp16", {"hard"})),
        "int8.onnx": ({"outside": 1.0, "quantized": True}, ("int8", {"released"})),
        "plugin.onnx": ({"plugin": "released"}, ("fp32", {"released"})),
        "opaque.onnx": ({}, ("fp32", set())),
    }
    for name, (kw, (precision, modes)) in cases.items():
        facts = onnx_facts(_graph(tmp_path / name, **kw), name)
        assert (facts.precision, set(facts.mask_modes)) == (precision, modes), name


# --- slow: an export whose sidecar lies --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    from defr.export import ExportConfig, export_model
    from defr.model import create_model, save_checkpoint

    root = tmp_path_factory.mktemp("front")
    save_checkpoint(create_model("tiny-vit", 64), root / "tiny.safetensors")
    export_model(root / "tiny.safetensors", root / "export", ExportConfig(verify=False), log=lambda m: None)
    return root / "export"


def _forged(export, tmp_path, precision: str | None = None, mask_mode: str | None = None):
    """A copy of the export whose (self-consistent, re-digested) model.json claims ``precision`` for
    model.onnx and ``mask_mode`` for the graph: a fp32 hard-mask graph described as something else."""
    from defr.export.sidecar import write_sidecar

    folder = tmp_path / "forged"
    shutil.copytree(export, folder)
    sidecar = read_sidecar(folder / "model.onnx")
    files = dict(sidecar.files)
    if precision:
        files["model.onnx"] = dataclasses.replace(files["model.onnx"], precision=precision)
    graph = dataclasses.replace(sidecar.graph, mask_mode=mask_mode) if mask_mode else sidecar.graph
    write_sidecar(dataclasses.replace(sidecar, files=files, graph=graph), folder / "model.json")
    return folder / "model.onnx"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("claim", "message"),
    [
        ({"precision": "int8"}, "model.json says int8 but the graph is fp32"),
        ({"precision": "fp16"}, "model.json says fp16 but the graph is fp32"),
        ({"mask_mode": "released"}, "model.json says mask_mode 'released' but the graph has ['hard']"),
    ],
)
def test_a_sidecar_claim_the_graph_contradicts_is_refused_in_one_line(export, tmp_path, claim, message):
    path = _forged(export, tmp_path, **claim)
    for runtime in ("onnxruntime", "openvino"):
        if runtime == "openvino" and not _has("openvino"):
            continue
        with pytest.raises(SidecarError) as e:
            load_backend(path, runtime=runtime)
        assert message in str(e.value) and "\n" not in str(e.value)
    assert load_backend(export / "model.onnx").precision == "fp32"  # the honest export opens


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def test_graph_facts_skip_the_weights_of_large_tensors(tmp_path, monkeypatch):
    """Tensors over ``SMALL`` bytes (a real model's weights, as initializers or Constant nodes) are read up
    to their header: their type still counts, their bytes are never parsed."""
    import defr.runtime.graph_claims as claims

    big16 = numpy_helper.from_array(np.zeros(40_000, np.float16), "w16")  # 80 kB
    big32 = numpy_helper.from_array(np.zeros(40_000, np.float32), "w32")
    scalars = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("zero", 0.0), ("outside", -np.inf))]
    where = helper.make_node("Where", ["visible", "zero", "outside"], ["bias"])
    constant = helper.make_node("Constant", [], ["c"], value=big16)
    parsed = []
    real = onnx.TensorProto.FromString
    monkeypatch.setattr(onnx.TensorProto, "FromString", lambda data: parsed.append(len(data)) or real(data))
    for name, nodes, inits, precision in (
        ("init16.onnx", [where], [big16, *scalars], "fp16"),
        ("const16.onnx", [where, constant], [big32, *scalars], "fp16"),
        ("fp32.onnx", [where], [big32, *scalars], "fp32"),
    ):
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])], [], inits)
        onnx.save(helper.make_model(graph), str(tmp_path / name))
        assert onnx_facts(str(tmp_path / name), name) == claims.GraphFacts(precision, frozenset({"hard"})), name
    assert parsed and max(parsed) <= claims.SMALL
