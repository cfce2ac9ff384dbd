"""ONNX Runtime and TensorRT pair backends: same detections as PyTorch, P = 0 frames, sidecar checks, errors."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper
from PIL import Image

from defr import vocab
from defr.cli import main as defr_main
from defr.errors import ConfigError
from defr.export import ExportConfig, SidecarError, export_model
from defr.export.verify import compare_with_torch
from defr.model import create_model, load_model, save_checkpoint
from defr.optional import MissingDependency
from defr.runtime import (
    BackendError,
    HOIDetector,
    RuntimeMeta,
    load_backend,
    load_detector,
)
from defr.runtime.backends import feed_device
from defr.runtime.sidecar import read_sidecar

pytest.importorskip("onnxruntime")
PERSON = vocab.PERSON


@pytest.fixture(scope="module")
def model():
    return create_model("tiny-vit", 64)


@pytest.fixture(scope="module")
def export(model, tmp_path_factory):
    """(checkpoint, export folder) of the tiny model."""
    root = tmp_path_factory.mktemp("backends")
    save_checkpoint(model, root / "tiny.safetensors")
    export_model(root / "tiny.safetensors", root / "export", ExportConfig(verify=False), log=lambda m: None)
    return root / "tiny.safetensors", root / "export"


def frames():
    """Three frames: several pairs, no detection at all, an object without a human (no pair)."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (90 + 10 * i, 120, 3), dtype=np.uint8) for i in range(3)]
    detections = [
        {
            "boxes": np.array([[10, 10, 60, 80], [50, 20, 115, 70], [5, 5, 30, 30]], np.float32),
            "labels": np.array([PERSON, 2, PERSON]),
            "scores": np.array([0.9, 0.8, 0.7], np.float32),
        },
        {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64), "scores": np.zeros(0, np.float32)},
        {"boxes": np.array([[0, 0, 100, 100]], np.float32), "labels": np.array([3]), "scores": np.array([0.9])},
    ]
    return images, detections


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


def assert_same_results(want, got, tol: float):
    assert len(want) == len(got)
    for w, g in zip(want, got, strict=True):
        assert torch.equal(w.hoi, g.hoi) and torch.equal(w.boxes_h, g.boxes_h) and torch.equal(w.boxes_o, g.boxes_o)
        assert max_abs(w.scores, g.scores) <= tol
        assert max_abs(w.image_logits, g.image_logits) <= 100 * tol


@pytest.mark.slow
def test_onnx_backend_reads_the_sidecar(model, export):
    backend = load_backend(export[1] / "model.onnx", providers=["CPUExecutionProvider"])
    assert backend.meta == RuntimeMeta.from_model(model)
    assert backend.precision == "fp32" and backend.providers == ["CPUExecutionProvider"]
    assert backend.accepts_no_pairs is False
    assert load_backend(export[1] / "model.fp16.onnx", providers=["CPUExecutionProvider"]).precision == "fp16"


@pytest.mark.slow
def test_onnx_detector_matches_pytorch(export):
    checkpoint, folder = export
    images, detections = frames()
    want = HOIDetector.from_checkpoint(checkpoint).detect(images, detections)
    assert len(want[0]) > 0 and len(want[1]) == len(want[2]) == 0
    got = HOIDetector.from_onnx(folder / "model.onnx", providers=["CPUExecutionProvider"]).detect(images, detections)
    assert_same_results(want, got, tol=1e-6)
    fp16 = load_detector(folder / "model.fp16.onnx").detect(images, detections)
    assert [len(r) for r in fp16] == [len(r) for r in want]
    assert max(max_abs(w.scores, g.scores) for w, g in zip(want, fp16, strict=True)) < 1e-2


@pytest.mark.slow
def test_onnx_detector_with_default_providers_runs_here(export):
    """The embedding API's first call: every available provider, in ONNX Runtime's order (which can
    start with one that runs nothing on a GPU, e.g. Azure's), and inputs prepared where they run."""
    checkpoint, folder = export
    images, detections = frames()
    detector = HOIDetector.from_onnx(folder / "model.onnx")
    assert detector.backend.device == feed_device(detector.backend.providers)
    want = HOIDetector.from_onnx(folder / "model.onnx", ["CPUExecutionProvider"]).detect(images, detections)
    assert_same_results(want, detector.detect(images, detections), tol=1e-6)


def test_feed_device_is_cuda_only_for_gpu_providers():
    assert feed_device(["CUDAExecutionProvider", "CPUExecutionProvider"]).type == "cuda"
    assert feed_device(["TensorrtExecutionProvider", "CUDAExecutionProvider"]).type == "cuda"
    assert feed_device(["AzureExecutionProvider", "CPUExecutionProvider"]).type == "cpu"
    assert feed_device(["CPUExecutionProvider"]).type == "cpu"


@pytest.mark.slow
def test_batch_without_pairs_never_calls_with_p0(export):
    """HOIDetector gives exported graphs a dummy pair when no frame has one; image logits still come out."""
    checkpoint, folder = export
    images, detections = frames()
    want = HOIDetector.from_checkpoint(checkpoint).detect(images[1:], detections[1:])
    backend = load_backend(folder / "model.onnx", providers=["CPUExecutionProvider"])
    seen = []

    def spy(images, boxes_h, boxes_o, pair_index):
        seen.append(int(pair_index.shape[0]))
        return backend(images, boxes_h, boxes_o, pair_index)

    spy.accepts_no_pairs = False
    spy.device = torch.device("cpu")
    got = HOIDetector(spy, backend.meta).detect(images[1:], detections[1:])
    assert seen == [1]
    assert_same_results(want, got, tol=1e-6)
    with pytest.raises(BackendError, match="at least one pair"):
        backend(torch.zeros(1, 3, 64, 64), torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))


@pytest.mark.slow
def test_sidecar_guards(export, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(export[1], folder)
    with pytest.raises(BackendError, match="providers"):
        load_backend(folder / "model.onnx", providers=["NoSuchExecutionProvider"])
    (folder / "model.onnx").write_bytes((folder / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(SidecarError, match="checksum differs"):
        load_backend(folder / "model.onnx")
    shutil.copy(folder / "model.fp16.onnx", folder / "renamed.onnx")
    with pytest.raises(SidecarError, match="not listed"):
        load_backend(folder / "renamed.onnx")
    sidecar = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**sidecar, "format": "other/9"}))
    with pytest.raises(SidecarError, match="not a defr-export sidecar"):
        load_backend(folder / "model.fp16.onnx")
    (folder / "model.json").unlink()
    with pytest.raises(SidecarError, match="no model.json beside it"):
        load_backend(folder / "model.fp16.onnx")


@pytest.mark.slow
def test_plugin_graph_runs_in_onnx_runtime(export, tmp_path):
    """One ONNX file for both runtimes: ONNX Runtime runs the plugin node's function (verified at export)."""
    checkpoint, folder = export
    out = tmp_path / "plugin"
    result = export_model(checkpoint, out, ExportConfig(plugin=True), log=lambda m: None)
    assert all(c["passed"] for c in result.comparisons.values())
    images, detections = frames()
    want = HOIDetector.from_onnx(folder / "model.onnx", ["CPUExecutionProvider"]).detect(images, detections)
    got = HOIDetector.from_onnx(out / "model.onnx", ["CPUExecutionProvider"]).detect(images, detections)
    assert_same_results(want, got, tol=1e-6)


@pytest.mark.slow
def test_missing_runtimes_name_the_package_and_extra(export, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependency, match=r"'onnxruntime' .*pip install \"defr\[export\]\""):
        load_backend(export[1] / "model.onnx")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependency, match=r"TensorRT 10.x and 11.x.* 'tensorrt' .*pip install \"defr\[gpu\]\""):
        load_backend(export[1] / "model.fp16.engine")
    with pytest.raises(MissingDependency, match="tensorrt"):
        load_detector(export[1] / "model.fp16.engine")


@pytest.mark.slow
def test_detect_cli_with_onnx_model(export, tmp_path):
    checkpoint, folder = export
    images, detections = frames()
    (tmp_path / "images").mkdir()
    (tmp_path / "dets").mkdir()
    for i, (image, dets) in enumerate(zip(images, detections, strict=True)):
        Image.fromarray(image).save(tmp_path / "images" / f"f{i}.png")
        entry = {k: np.asarray(v).tolist() for k, v in dets.items()}
        (tmp_path / "dets" / f"f{i}.json").write_text(json.dumps(entry))
    common = ["--images", str(tmp_path / "images"), "--detections", str(tmp_path / "dets")]
    for name, source in (
        ("torch", ["--checkpoint", str(checkpoint)]),
        ("onnx", ["--model", str(folder / "model.onnx")]),
    ):
        r = CliRunner().invoke(defr_main, ["detect", *source, *common, "--out", str(tmp_path / f"{name}.json")])
        assert r.exit_code == 0, r.output
    want, got = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("torch", "onnx"))
    assert want.keys() == got.keys() and sum(len(e["hoi"]) for e in want.values()) > 0
    for name in want:
        assert want[name]["hoi"] == got[name]["hoi"] and want[name]["boxes_h"] == got[name]["boxes_h"]
        assert np.allclose(want[name]["scores"], got[name]["scores"], atol=1e-6)


@pytest.mark.slow
def test_load_backend_is_the_one_front_door(export):
    """Checkpoint, .onnx and .engine by suffix; exported files keep their own precision and graph."""
    checkpoint, folder = export
    torch_backend = load_backend(checkpoint)
    assert (torch_backend.name, torch_backend.mask_mode, torch_backend.precision) == ("torch", "hard", "fp32")
    onnx_backend = load_backend(folder / "model.fp16.onnx", threads=1)
    assert (onnx_backend.name, onnx_backend.precision, onnx_backend.providers) == (
        "onnxruntime",
        "fp16",
        ["CPUExecutionProvider"],
    )
    assert onnx_backend.sidecar == read_sidecar(folder / "model.fp16.onnx")
    for kwargs, message in [
        ({"precision": "bf16"}, "ONNX Runtime runs this fp32 file at fp32, not bf16 \\(runtime openvino does\\)"),
        ({"attention": "triton"}, "attention is PyTorch's option, not ONNX Runtime's"),
        ({"image_size": 96}, "image_size is PyTorch's option, not ONNX Runtime's"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_backend(folder / "model.onnx", **kwargs)
    assert load_detector(folder / "model.onnx").backend.sidecar.files.keys() == {"model.onnx", "model.fp16.onnx"}


def _with_external_data(folder) -> None:
    """Re-save ``model.onnx`` with its weights in ``weights.bin`` and list both in model.json, as an
    export of a model too large for one protobuf does."""
    import onnx

    from defr.export.sidecar import file_entry, write_sidecar

    proto = onnx.load(str(folder / "model.onnx"))
    onnx.save(proto, str(folder / "model.onnx"), save_as_external_data=True, location="weights.bin")
    sidecar = read_sidecar(folder / "model.onnx")
    files = {**sidecar.files, "model.onnx": file_entry(folder / "model.onnx", "fp32")}
    write_sidecar(dataclasses.replace(sidecar, files=files), folder / "model.json")


@pytest.mark.slow
def test_external_data_is_covered_by_the_checksum(export, tmp_path):
    checkpoint, folder = export
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    _with_external_data(copy)
    assert set(read_sidecar(copy / "model.onnx").files["model.onnx"].external_data) == {"weights.bin"}
    images, detections = frames()
    want = HOIDetector.from_checkpoint(checkpoint).detect(images, detections)
    assert_same_results(want, load_detector(copy / "model.onnx").detect(images, detections), tol=1e-6)
    data = bytearray((copy / "weights.bin").read_bytes())
    data[-4:] = np.float32(0.254).tobytes()  # one weight changed: the scores would move silently
    (copy / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(SidecarError, match="weights.bin: checksum differs .* external data of model.onnx"):
        load_detector(copy / "model.onnx")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("class_objects", lambda d: [0] * (len(d) - 1) + [80], "class_objects[599] must be a HICO object index"),
        ("std", lambda d: [d[0], 0, d[2]], "input.std[1] is 0.0: a standard deviation must be > 0"),
        ("image_size", lambda d: "64", "input.image_size must be an integer, not a string '64'"),
        ("mean", lambda d: d[:2], "input.mean must be a list of 3 numbers (R, G, B), not 2 values"),
        ("files", lambda d: list(d), "files must be a JSON object, not a list"),
        ("mask_mode", lambda d: "soft", "graph.mask_mode must be one of"),
    ],
)
def test_malformed_sidecar_is_one_line_in_detect(export, tmp_path, field, value, message):
    """What reached ONNX Runtime (InvalidArgument), a raw KeyError / TypeError, "non-finite weights" for
    std 0, or every result empty (class_objects out of range) is one line naming the field, exit 1."""
    checkpoint, folder = export
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    d = json.loads((copy / "model.json").read_text())
    where = d if field in ("class_objects", "files") else d["graph"] if field == "mask_mode" else d["input"]
    where[field] = value(where[field])
    (copy / "model.json").write_text(json.dumps(d))
    images, detections = frames()
    (tmp_path / "images").mkdir()
    Image.fromarray(images[0]).save(tmp_path / "images" / "f0.png")
    entry = {k: np.asarray(v).tolist() for k, v in detections[0].items()}
    (tmp_path / "dets.jsonl").write_text(json.dumps({"filename": "f0.png", **entry}) + "\n")
    args = ["detect", "--model", str(copy / "model.onnx"), "--images", str(tmp_path / "images")]
    args += ["--detections", str(tmp_path / "dets.jsonl"), "--out", str(tmp_path / "out.json")]
    r = CliRunner().invoke(defr_main, args)
    lines = r.output.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 1 and message in lines[0] and "model.json" in lines[0], r.output
    assert not (tmp_path / "out.json").exists()


@pytest.mark.slow
def test_non_finite_outputs_fail_verification_and_the_runtime(export, detect_inputs, tmp_path):
    checkpoint, folder = export[0], detect_inputs
    export_model(checkpoint, tmp_path / "export", ExportConfig(verify=False), log=lambda m: None)
    path = tmp_path / "export" / "model.onnx"
    proto = onnx.load(str(path))
    ln_post = next(t for t in proto.graph.initializer if numpy_helper.to_array(t).shape == (192,))
    ln_post.CopyFrom(numpy_helper.from_array(np.full((192,), np.nan, np.float32), ln_post.name))
    onnx.save(proto, str(path))
    result = compare_with_torch(path, load_model(checkpoint), "fp32")
    assert not result.passed and max(result.max_abs.values()) == float("inf")
    sidecar = json.loads((tmp_path / "export" / "model.json").read_text())
    from defr.runtime.sidecar import own_digest, sha256

    sidecar["files"]["model.onnx"]["sha256"] = sha256(path)
    sidecar["sidecar_sha256"] = own_digest(sidecar)  # re-sealed: this test is about the graph's outputs
    (tmp_path / "export" / "model.json").write_text(json.dumps(sidecar))
    detector = HOIDetector.from_onnx(path, ["CPUExecutionProvider"])
    image = np.zeros((40, 50, 3), np.uint8)
    dets = {"boxes": [[0, 0, 20, 30], [10, 5, 45, 38]], "labels": [PERSON, 2], "scores": [0.9, 0.8]}
    with pytest.raises(BackendError, match="onnxruntime backend returned NaN or inf logits for frame.png"):
        detector.detect([image], [dets], names=["frame.png"])
    r = CliRunner().invoke(
        defr_main,
        ["detect", "--model", str(path), "--images", str(folder / "images"), "--detections",
         str(folder / "dets.jsonl"), "--out", str(tmp_path / "out.json")],
    )  # fmt: skip
    assert r.exit_code == 1 and "NaN or inf logits" in r.output and not (tmp_path / "out.json").exists()


@pytest.mark.slow
def test_a_sidecar_edited_after_export_is_refused_at_load(export, tmp_path):
    """Issue 28 item 11: a changed mean or reversed class_objects passed every field check and changed results."""
    checkpoint, folder = export
    for edit in ("mean", "class_objects"):
        copy = tmp_path / edit
        shutil.copytree(folder, copy)
        d = json.loads((copy / "model.json").read_text())
        if edit == "mean":
            d["input"]["mean"] = [0.5, 0.5, 0.5]
        else:
            d["class_objects"] = d["class_objects"][::-1]
        (copy / "model.json").write_text(json.dumps(d, indent=2))
        with pytest.raises(SidecarError, match="edited after export"):
            load_detector(copy / "model.onnx")
