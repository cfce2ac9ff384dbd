"""INT8 export: quantization groups, calibration readers, the accuracy gate, the runtime, bench, session cache."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnx.reference
import pytest
import torch
from click.testing import CliRunner
from imagekit import bomb_png
from onnx import helper

from defr import vocab
from defr.data import generate_synthetic
from defr.export import ExportConfig, verify
from defr.export import exporter as exporter_module
from defr.export.accuracy import GateResult, accuracy_gate
from defr.export.calibration import (
    CalibrationError,
    GraphFeeds,
    detect_format,
    load_calibration_set,
)
from defr.export.cli import main
from defr.export.errors import VerificationError
from defr.export.int8 import NODE_GROUPS, Int8Config, downstream_nodes, node_groups, prepare, separate_conv_bias
from defr.export.onnx_export import export_onnx
from defr.export.sidecar import file_entry, model_sidecar, write_sidecar
from defr.export.verify import feeds as as_feeds
from defr.model import create_model, save_checkpoint
from defr.runtime import HOIDetector, load_detector, onnx_session
from defr.runtime.contract import OUTPUT_NAMES, RuntimeMeta, example_inputs
from defr.runtime.derived import commit_derivative, record_path, verified_derivative
from defr.runtime.io import read_image
from defr.runtime.onnx_session import SessionConfig, cache_key, cache_path, make_session
from defr.runtime.sidecar import sha256

pytest.importorskip("onnxruntime.quantization")

SIZE = 64


@pytest.fixture(scope="module")
def model():
    return create_model("tiny-vit", SIZE)


@pytest.fixture(scope="module")
def meta(model):
    return RuntimeMeta.from_model(model)


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(model, path)
    return path


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A small ``defr synth`` set (HICO + HICO-DET layout), 40 images at 64 px (10 in the test split)."""
    root = tmp_path_factory.mktemp("synth") / "data"
    generate_synthetic(root, images=40, seed=0, size=SIZE)
    return root


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    """One int8 export (static, built-in synthetic calibration, gate on), shared by several tests."""
    out = tmp_path_factory.mktemp("export") / "export"
    r = CliRunner().invoke(
        main, [str(checkpoint), "-o", str(out), "--int8", "--calibration-images", "4", "--int8-max-drop", "100"]
    )
    assert r.exit_code == 0, r.output
    return out, r.output


def _leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# --- node groups --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_node_groups_of_the_pair_graph(model, tmp_path):
    fp32 = export_onnx(model, tmp_path / "model.onnx")
    prepared = onnx.load(str(prepare(fp32, tmp_path / "prepared.onnx")))
    groups = node_groups(prepared)
    blocks = len(model.vit.blocks)
    # tiny-vit: a conv stem of 5 convolutions; per block QKV, out-projection, MLP in and out; one classifier
    assert len(groups["conv"]) == 5
    assert len(groups["linear"]) == 4 * blocks
    assert len(groups["head"]) == 1
    # q·kᵀ and softmax·v of every full block, and the pair CLS scores of the last
    assert len(groups["attention"]) == 2 * (blocks - 1) + 1
    on_boxes = downstream_nodes(prepared.graph, ("boxes_h", "boxes_o"))
    on_images = downstream_nodes(prepared.graph, ("images",))
    box_only = on_boxes - on_images
    assert box_only and not box_only & {n for g in NODE_GROUPS for n in groups[g]}
    softmaxes = {n.name for n in prepared.graph.node if n.op_type == "Softmax"}
    assert len(softmaxes & set(groups["norm"])) == blocks - 1  # the pair softmax (mask's -inf) is not a candidate


def test_conv_bias_becomes_a_float_add_with_the_same_result():
    """OpenVINO dropped a quantized Conv's bias (docs/export.md § INT8): the bias is written as an Add."""
    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(4, 3, 1, 1)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv"),
            helper.make_node("Conv", ["y", "w2"], ["z"], name="conv_no_bias"),
        ],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 2, 2])],
        [helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1, 4, 2, 2])],
        [
            onnx.numpy_helper.from_array(weight, "w"),
            onnx.numpy_helper.from_array(bias, "b"),
            onnx.numpy_helper.from_array(rng.normal(size=(4, 4, 1, 1)).astype(np.float32), "w2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = {"x": rng.normal(size=(1, 3, 2, 2)).astype(np.float32)}
    want = onnx.reference.ReferenceEvaluator(model).run(None, x)[0]
    assert separate_conv_bias(model.graph) == 1
    assert [(n.op_type, len(n.input)) for n in model.graph.node] == [("Conv", 2), ("Add", 2), ("Conv", 2)]
    onnx.checker.check_model(model)
    np.testing.assert_allclose(onnx.reference.ReferenceEvaluator(model).run(None, x)[0], want, rtol=1e-5, atol=1e-5)


def test_int8_config_rejects_bad_values():
    with pytest.raises(ValueError, match="int8 method"):
        Int8Config(method="fp4")
    with pytest.raises(ValueError, match="groups"):
        Int8Config(groups=("everything",))
    with pytest.raises(ValueError, match="calibration method"):
        Int8Config(calibration_method="mse")
    with pytest.raises(ValueError, match="--calibration applies to --int8"):
        ExportConfig(calibration="synthetic")
    with pytest.raises(ValueError, match="--int8-max-drop"):
        ExportConfig(int8=True, int8_max_drop=-1)
    assert ExportConfig(int8=True, calibration="none").quantization.method == "dynamic"


# --- the export ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_int8_export_files_sidecar_gate_and_runtime(exported, model, meta, synth):
    out, output = exported
    assert sorted(p.name for p in out.iterdir()) == ["model.fp16.onnx", "model.int8.onnx", "model.json", "model.onnx"]
    assert "static quantization of 21 nodes (conv 5, linear 16)" in output
    assert "kept in float: attention 7, head 1, norm 11, the box arithmetic" in output
    assert "accuracy gate:" in output and "passed" in output
    table = output[output.index("file ") :]
    assert "model.int8.onnx" in table and "int8" in table
    sidecar = json.loads((out / "model.json").read_text())
    entry = sidecar["files"]["model.int8.onnx"]
    assert entry["precision"] == "int8" and entry["sha256"] == sha256(out / "model.int8.onnx")
    int8 = sidecar["int8"]
    assert int8["method"] == "static" and int8["format"] == "QDQ" and int8["groups"] == ["conv", "linear"]
    assert int8["quantized"] == {"conv": 5, "linear": 16}
    assert int8["kept_float"] == {"attention": 7, "head": 1, "norm": 11}
    assert int8["calibration"]["format"] == "synthetic" and int8["calibration"]["images"] == 4
    assert int8["held_out"]["images"] == 4 and int8["held_out"]["boxes"] == "gt"
    gate = int8["gate"]
    assert gate["passed"] and gate["images"] == 4 and gate["max_drop"] == 100
    assert set(gate["logits"]) == {"fp16", "int8"}
    assert 0.0 < gate["logits"]["int8"]["max_abs_pair"] < 5.0 and 0.0 <= gate["logits"]["int8"]["top1_agreement"] <= 1
    assert set(gate["metrics"]) == {"fp32", "fp16", "int8"}
    assert set(gate["drop"]) == {"hico_mAP", "hicodet_full"}
    graph = onnx.load(str(out / "model.int8.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and {i.name for i in graph.graph.input} == {
        "images",
        "boxes_h",
        "boxes_o",
        "pair_index",
    }

    # the runtime loads it like the other files: HOIDetector.from_onnx, load_detector (defr detect --model)
    images = [torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)]
    dets = [
        {"boxes": [[2.0, 3.0, 30.0, 40.0], [20.0, 5.0, 60.0, 45.0]], "labels": [vocab.PERSON, 1], "scores": [0.9, 0.8]}
    ]
    det = HOIDetector.from_onnx(out / "model.int8.onnx", providers=["CPUExecutionProvider"])
    assert det.backend.precision == "int8" and det.backend.name == "onnxruntime"
    got = det.detect(images, dets)[0]
    ref = HOIDetector.from_onnx(out / "model.onnx", providers=["CPUExecutionProvider"]).detect(images, dets)[0]
    assert len(got) == len(ref) > 0
    assert (got.image_logits - ref.image_logits).abs().max() < 2.0
    assert load_detector(out / "model.int8.onnx").backend.precision == "int8"


@pytest.mark.slow
def test_int8_dynamic_without_calibration(checkpoint, tmp_path):
    out = tmp_path / "export"
    args = [str(checkpoint), "-o", str(out), "--int8", "--calibration", "none", "--calibration-images", "3"]
    r = CliRunner().invoke(main, [*args, "--int8-max-drop", "100"])
    assert r.exit_code == 0, r.output
    assert "dynamic quantization" in r.output and "--calibration none" in r.output
    sidecar = json.loads((out / "model.json").read_text())
    assert sidecar["int8"]["method"] == "dynamic" and sidecar["int8"]["calibration"] is None
    assert sidecar["int8"]["gate"]["images"] == 6  # no calibration: every drawn image is held out
    ops = {n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node}
    assert "MatMulInteger" in ops and "QuantizeLinear" not in ops
    assert HOIDetector.from_onnx(out / "model.int8.onnx").backend.precision == "int8"


@pytest.mark.slow
def test_no_verify_skips_the_gate(checkpoint, tmp_path):
    out = tmp_path / "export"
    r = CliRunner().invoke(
        main, [str(checkpoint), "-o", str(out), "--int8", "--calibration-images", "2", "--no-verify"]
    )
    assert r.exit_code == 0, r.output
    assert "accuracy gate skipped" in r.output
    assert json.loads((out / "model.json").read_text())["int8"]["gate"] is None


@pytest.mark.slow
def test_failed_gate_exits_1_and_writes_nothing(checkpoint, tmp_path, monkeypatch):
    def failing_gate(files, held_out, max_drop, log, runtime="onnxruntime"):
        raise VerificationError(f"model.int8.onnx: int8 loses 3.00 hico_mAP points, more than {max_drop:g}")

    monkeypatch.setattr(exporter_module, "accuracy_gate", failing_gate)
    # the random-input sanity bound is not what this test is about (2 calibration images can exceed it)
    monkeypatch.setitem(verify.TOLERANCES, "int8", verify.Tolerance("rel", 1.0))
    out = tmp_path / "export"
    r = CliRunner().invoke(main, [str(checkpoint), "-o", str(out), "--int8", "--calibration-images", "2"])
    assert r.exit_code == 1, r.output
    assert "int8 loses 3.00 hico_mAP points" in r.output
    assert not out.exists() and _leftovers(tmp_path) == []


# --- the gate itself ----------------------------------------------------------------------------------------


def _negated(src, dst) -> None:
    """A copy of an exported graph whose two outputs are negated: every ranking reversed."""
    m = onnx.load(str(src))
    for out in m.graph.output:
        for node in m.graph.node:
            node.output[:] = [o + "__raw" if o == out.name else o for o in node.output]
            node.input[:] = [i + "__raw" if i == out.name else i for i in node.input]
        m.graph.node.append(helper.make_node("Neg", [out.name + "__raw"], [out.name]))
    onnx.save(m, str(dst))


@pytest.mark.slow
def test_gate_fails_when_int8_loses_accuracy(model, meta, synth, tmp_path):
    fp32 = export_onnx(model, tmp_path / "model.onnx")
    same = shutil.copy(fp32, tmp_path / "same.onnx")
    _negated(fp32, tmp_path / "negated.onnx")
    held_out = load_calibration_set(synth, 10, meta, tmp_path)
    # labels that make fp32 perfect: for five classes, the three images fp32 scores highest are the positives
    session = make_session(fp32, cfg=SessionConfig(cache=False))
    logits = np.concatenate([session.run([OUTPUT_NAMES[1]], f)[0] for f in GraphFeeds(held_out, meta)])
    held_out.class_names = list(model.cfg.class_names)
    held_out.class_objects = vocab.hico().hoi_object
    held_out.labels = np.zeros_like(logits)  # ambiguous: not evaluated
    for c in (0, 100, 200, 300, 400):
        held_out.labels[:, c] = -1.0
        held_out.labels[np.argsort(-logits[:, c])[:3], c] = 1.0
    held_out.annotations = None

    # the gate loads the files as users do (load_backend): they are listed in the model.json beside them, as
    # what they are (fp32 graphs standing in for int8 ones: a sidecar claiming int8 for them is refused)
    names = {"model.onnx": "fp32", "same.onnx": "fp32", "negated.onnx": "fp32"}
    files = {name: file_entry(tmp_path / name, precision) for name, precision in names.items()}
    sidecar = model_sidecar(model, files, opset=18, plugin=False, mask_mode="hard", source={})
    write_sidecar(sidecar, tmp_path / "model.json")
    passed = accuracy_gate({"fp32": fp32, "int8": same}, held_out, 1.0, log=lambda m: None)
    assert passed.passed and passed.drop == {"hico_mAP": 0.0} and passed.metrics["fp32"]["hico_mAP"] == 1.0
    assert passed.logits["int8"]["max_abs_pair"] == 0.0 and passed.logits["int8"]["top1_agreement"] == 1.0
    with pytest.raises(VerificationError, match=r"loses \d+\.\d\d hico_mAP points .* more than --int8-max-drop 1"):
        accuracy_gate({"fp32": fp32, "int8": tmp_path / "negated.onnx"}, held_out, 1.0, log=print)


def test_gate_without_labels_rests_on_logits():
    r = GateResult(images=3, pairs=7, max_drop=1.0, note="no image labels")
    assert r.passed and r.to_dict()["passed"] and "no image labels" in r.summary()
    assert not GateResult(images=3, pairs=7, max_drop=1.0, drop={"hico_mAP": 1.5}).passed


# --- calibration readers ------------------------------------------------------------------------------------


def test_calibration_from_synth_hico_layout(synth, meta, tmp_path):
    assert detect_format(synth) == "hico"
    cal = load_calibration_set(synth, 3, meta, tmp_path)
    assert len(cal) == 6 and cal.format == "hico" and cal.boxes == "gt"
    assert cal.labels.shape == (6, len(cal.class_names)) and cal.annotations.num_images == 6
    assert [p.name for p in cal.paths] == cal.annotations.filenames
    calibrate, held_out = cal.split(3)
    assert len(calibrate) == 3 and len(held_out) == 3 and not set(calibrate.paths) & set(held_out.paths)
    feeds = list(GraphFeeds(calibrate, meta))
    assert len(feeds) == 3
    for f in feeds:
        assert f["images"].shape == (1, 3, SIZE, SIZE) and f["images"].dtype == np.float32
        p = f["pair_index"].shape[0]
        assert p >= 1 and f["boxes_h"].shape == f["boxes_o"].shape == (p, 4) and (f["pair_index"] == 0).all()
        assert f["boxes_h"].max() <= SIZE + 1e-3  # in pixels of the S×S input
    # the same inputs HOIDetector feeds a backend: the runtime's preprocessing
    det = HOIDetector(_Echo(meta))
    det.detect([read_image(calibrate.paths[0])], [calibrate.detections[calibrate.paths[0].name]])
    assert np.array_equal(det.backend.inputs[0].numpy(), feeds[0]["images"])


class _Echo:
    accepts_no_pairs = False
    name, precision, mask_mode, device = "echo", "fp32", "hard", torch.device("cpu")

    def __init__(self, meta):
        self.meta = meta

    def __call__(self, images, boxes_h, boxes_o, pair_index):
        self.inputs = (images, boxes_h, boxes_o, pair_index)
        c = len(self.meta.class_names)
        return torch.zeros(pair_index.shape[0], c), torch.zeros(images.shape[0], c)


def test_calibration_from_hicodet_layout(synth, meta, tmp_path):
    root = tmp_path / "hicodet"
    (root / "images").mkdir(parents=True)
    shutil.copytree(synth / "images" / "test2015", root / "images" / "test2015")
    shutil.copy(synth / "instances_test2015.json", root)
    assert detect_format(root) == "hicodet"
    cal = load_calibration_set(root, 2, meta, tmp_path)
    assert len(cal) == 4 and cal.boxes == "gt" and cal.annotations is not None
    assert cal.class_names[:2] == ["ride bicycle", "ride horse"]
    for i, name in enumerate(p.name for p in cal.paths):
        k = cal.annotations.filenames.index(name)
        assert (cal.labels[i, cal.annotations.hoi[k]] == 1).all()


def test_calibration_from_jsonl(synth, meta, tmp_path):
    root = tmp_path / "jsonl"
    root.mkdir()
    images = sorted((synth / "images" / "test2015").iterdir())[:5]
    (root / "classes.json").write_text(json.dumps(["ride bicycle", "ride horse"]))
    lines = [json.dumps({"image": str(p), "labels": [i % 2]}) for i, p in enumerate(images)]
    (root / "test.jsonl").write_text("\n".join(lines))
    (root / "train.jsonl").write_text("\n".join(lines))
    assert detect_format(root) == "jsonl"
    cal = load_calibration_set(root, 2, meta, tmp_path)
    assert len(cal) == 4 and cal.boxes == "random" and cal.labels.shape == (4, 2) and cal.annotations is None
    assert len(list(GraphFeeds(cal, meta))) == 4


@pytest.mark.parametrize("detections", ["folder", "jsonl", "none"])
def test_calibration_from_a_folder_of_images(synth, meta, tmp_path, detections):
    root = tmp_path / "frames"
    root.mkdir()
    for p in sorted((synth / "images" / "test2015").iterdir())[:3]:
        shutil.copy(p, root)
    entry = {"boxes": [[1, 1, 30, 40], [10, 5, 50, 45]], "labels": [vocab.PERSON, 2], "scores": [0.9, 0.7]}
    if detections == "folder":
        (root / "detections").mkdir()
        for p in root.glob("*.jpg"):
            (root / "detections" / f"{p.stem}.json").write_text(json.dumps(entry))
    elif detections == "jsonl":
        (root / "detections.jsonl").write_text(
            "\n".join(json.dumps({"filename": p.name, **entry}) for p in root.glob("*.jpg"))
        )
    assert detect_format(root) == "folder"
    cal = load_calibration_set(root, 8, meta, tmp_path)
    assert len(cal) == 3 and cal.labels is None and cal.annotations is None
    assert cal.boxes == ("random" if detections == "none" else "detections")
    calibrate, held_out = cal.split(8)
    assert (len(calibrate), len(held_out)) == (2, 1)
    feeds = list(GraphFeeds(cal, meta))
    assert all(f["pair_index"].shape[0] >= 1 for f in feeds)
    if detections != "none":  # one person and one object: one pair
        assert all(f["pair_index"].shape[0] == 1 for f in feeds)


def test_bad_calibration_data_is_one_line_exit_2(checkpoint, synth, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"not a jpeg at all")
    (broken / "b.jpg").write_bytes(b"neither")
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(next((synth / "images" / "test2015").iterdir()), one)
    bomb = tmp_path / "bomb"  # issue 18, case 13: a decompression bomb among the images
    bomb.mkdir()
    shutil.copy(next((synth / "images" / "test2015").iterdir()), bomb / "a.jpg")
    bomb_png(bomb / "b.png")
    cases = [
        (empty, "not calibration data"),
        (tmp_path / "missing", "no such calibration folder"),
        (broken, "a.jpg: cannot read image"),
        (bomb, "b.png: refused as a decompression bomb"),
    ]
    for data, message in cases:
        out = tmp_path / f"export-{data.name}"
        r = CliRunner().invoke(main, [str(checkpoint), "-o", str(out), "--int8", "--calibration", str(data)])
        assert r.exit_code == 2, (data, r.output)
        lines = [line for line in r.output.splitlines() if line.startswith("Error: ")]
        assert len(lines) == 1 and message in lines[0], r.output
        assert r.exception is None or isinstance(r.exception, SystemExit)
        assert not out.exists()
    assert _leftovers(tmp_path) == []
    with pytest.raises(CalibrationError, match="at least 2"):
        load_calibration_set(one, 1, RuntimeMeta.from_model(create_model("tiny-vit", SIZE)), tmp_path).split(1)


# --- session options and the optimised-model cache ------------------------------------------------------------


@pytest.mark.slow
def test_session_cache_written_once_and_equal(exported, tmp_path):
    out, _ = exported
    folder = tmp_path / "copy"
    shutil.copytree(out, folder, ignore=shutil.ignore_patterns(".*"))  # no cache of other tests
    path = folder / "model.int8.onnx"
    cfg = SessionConfig(threads=1, cache=True)
    cached = cache_path(path, cache_key(sha256(path), cfg))
    plain = make_session(path, cfg=SessionConfig(threads=1, cache=False))
    assert not cached.exists()
    first = make_session(path, cfg=cfg)
    assert cached.is_file() and cached.name.startswith(".model.int8.ort-")
    stamp = cached.stat().st_mtime_ns
    second = make_session(path, cfg=cfg)
    assert cached.stat().st_mtime_ns == stamp  # read, not rewritten
    inputs = as_feeds(example_inputs(SIZE, 2, 5))
    ref = plain.run(None, inputs)
    for session in (first, second):
        for a, b in zip(session.run(None, inputs), ref, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp.onnx")]
    # another level, another key; the default (cache=False) writes nothing
    make_session(folder / "model.onnx", cfg=SessionConfig(threads=1))
    assert not [p for p in folder.iterdir() if p.name.startswith(".model.ort-")]
    assert cache_key(sha256(path), SessionConfig(optimization="basic")) != cache_key(sha256(path), cfg)


@pytest.mark.slow
def test_planted_cache_is_never_loaded(exported, tmp_path):
    """A file at the cache's name that the cache did not write (or that changed since) is rebuilt, not run."""
    out, _ = exported
    folder = tmp_path / "copy"
    shutil.copytree(out, folder, ignore=shutil.ignore_patterns(".*"))
    path = folder / "model.onnx"
    cfg = SessionConfig(threads=1, cache=True)
    cached = cache_path(path, cache_key(sha256(path), cfg))
    _negated(path, cached)  # planted: every logit negated
    inputs = as_feeds(example_inputs(SIZE, 2, 5))
    ref = make_session(path, cfg=SessionConfig(threads=1, cache=False)).run(None, inputs)
    for _ in range(2):  # the plant is refused and replaced; the replacement is then read back
        got = make_session(path, cfg=cfg).run(None, inputs)
        for a, b in zip(got, ref, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    assert record_path(cached).is_file()
    _negated(path, cached)  # changed after it was written: its record no longer matches
    got = make_session(path, cfg=cfg).run(None, inputs)
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-5)


def test_derived_file_verification(tmp_path):
    """The reusable check every runtime's cache goes through (defr.runtime.derived)."""
    source = "a" * 64
    path = tmp_path / ".model.x-key.bin"
    assert not verified_derivative(path, source)  # absent
    path.write_bytes(b"planted")
    assert not verified_derivative(path, source) and not path.exists()  # no record: removed
    tmp = tmp_path / "new.tmp"
    tmp.write_bytes(b"compiled")
    commit_derivative(tmp, path, source)
    assert verified_derivative(path, source) and not tmp.exists()
    assert not verified_derivative(path, "b" * 64) and not path.exists()  # another source: removed
    tmp.write_bytes(b"compiled")
    commit_derivative(tmp, path, source)
    path.write_bytes(b"compiled!")  # changed after the record was written
    assert not verified_derivative(path, source) and not record_path(path).exists()


@pytest.mark.slow
def test_session_without_a_writable_folder(exported, tmp_path, monkeypatch):
    out, _ = exported
    folder = tmp_path / "ro"
    shutil.copytree(out, folder, ignore=shutil.ignore_patterns(".*"))

    def no_write(*args, **kwargs):
        raise PermissionError("read-only folder")

    monkeypatch.setattr(onnx_session.tempfile, "mkstemp", no_write)
    session = make_session(folder / "model.onnx", cfg=SessionConfig(threads=1, cache=True))
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_session_config_rejects_bad_values():
    with pytest.raises(ValueError, match="optimization"):
        SessionConfig(optimization="max")
    with pytest.raises(ValueError, match="threads"):
        SessionConfig(threads=0)


# --- bench ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_bench_times_int8_side_by_side(tmp_path):
    from defr.cli import main as defr_main

    out = tmp_path / "bench.json"
    args = ["bench", "--model", "tiny-vit", "--image-size", "64", "--batch", "1", "--pairs", "0,3", "--threads", "1"]
    args += ["--backends", "torch,onnxruntime,onnxruntime-int8", "--warmup", "0", "--repeats", "2", "--json", str(out)]
    r = CliRunner().invoke(defr_main, args)
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["rows"]
    keys = [(x["backend"], x["precision"], x["pairs"]) for x in rows]
    assert keys == [("torch", "fp32", 0), ("torch", "fp32", 3), ("onnxruntime", "fp32", 0), ("onnxruntime", "fp32", 3),
                    ("onnxruntime", "int8", 0), ("onnxruntime", "int8", 3)]  # fmt: skip
