"""The OpenVINO backend: fp32 equals ONNX Runtime fp32, bf16 / int8 agree within stated tolerances,
P = 0 and batches as the ONNX Runtime backend, the verified compiled-model cache, the missing-package
message, and the selection (``runtime=``, ``--runtime``, ``defr bench`` backends)."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from defr import vocab
from defr.bench import BenchConfig, build_backends
from defr.cli import main as defr_main
from defr.errors import ConfigError
from defr.export import ExportConfig, export_model
from defr.model import create_model, save_checkpoint
from defr.optional import MissingDependency
from defr.runtime import BackendError, HOIDetector, load_backend, load_detector
from defr.runtime import openvino_backend as ovb
from defr.runtime.contract import example_inputs
from defr.runtime.openvino_backend import OpenVinoConfig, cache_key, cache_paths, read_verified_blob
from defr.runtime.sidecar import sha256

pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")

FP32_TOL = 1e-4  # OpenVINO fp32 against ONNX Runtime fp32, max |Δ| of any logit (measured: 2.5e-5)
# int8 against fp32, as a fraction of the fp32 logits' standard deviation: mean |Δ| (measured on an
# AVX2 CPU without VNNI, where both runtimes' u8 × s8 kernels saturate: 0.13) and Pearson correlation (≥ 0.9).
INT8_MEAN_REL, INT8_MIN_CORR = 0.4, 0.85
# OpenVINO int8 against ONNX Runtime int8 on the same model.int8.onnx, as a fraction of the logits' standard
# deviation. From int8 rounding: one uint8 step of an activation is its range / 255, about 2.4 % of its std for
# a ±3σ range; runtimes that round a tensor differently by up to one step (ties, accumulation order) stay
# within one step on the mean and a few (4: 10 %) on the worst logit. Measured (AMD EPYC, AVX2, 2 cores,
# shared): 0.5 % / 2.7 %; before the Conv bias was written as a float Add, OpenVINO dropped the stem's bias:
# 12 % / 55 %.
INT8_VS_ORT_MEAN_REL, INT8_VS_ORT_MAX_REL = 0.024, 0.10
BF16_MEAN_REL, BF16_MAX_ABS = 0.02, 1.0  # bf16 against fp32 (8 significant bits); not run on a CPU without bf16


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """(checkpoint, export folder with model.onnx and model.int8.onnx) of a random tiny model at 64 px."""
    root = tmp_path_factory.mktemp("openvino")
    save_checkpoint(create_model("tiny-vit", 64), root / "tiny.safetensors")
    cfg = ExportConfig(verify=False, int8=True, calibration_images=4)
    export_model(root / "tiny.safetensors", root / "export", cfg, log=lambda m: None)
    return root / "tiny.safetensors", root / "export"


def cpu_bf16() -> bool:
    return ovb.cpu_has_bf16(ov.Core())


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


def edge_inputs(s: int) -> tuple[torch.Tensor, ...]:
    """Boxes on the input's borders: the whole image, one-pixel corners, sub-pixel and zero-area boxes."""
    boxes = torch.tensor(
        [
            [0.0, 0.0, s, s],
            [0.0, 0.0, 1.0, 1.0],
            [s - 1.0, s - 1.0, s, s],
            [0.2, 0.3, 0.4, 0.5],
            [10.0, 10.0, 10.0, 10.0],
            [s - 0.5, 0.0, s, s],
        ]
    )
    images = torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(1))
    return images, boxes, boxes.flip(0), torch.tensor([0, 0, 0, 1, 1, 1])


def frames():
    """Three frames: several pairs, no detection at all, an object without a human (no pair)."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (90 + 10 * i, 120, 3), dtype=np.uint8) for i in range(3)]
    person = vocab.PERSON
    detections = [
        {
            "boxes": np.array([[10, 10, 60, 80], [50, 20, 115, 70], [5, 5, 30, 30]], np.float32),
            "labels": np.array([person, 2, person]),
            "scores": np.array([0.9, 0.8, 0.7], np.float32),
        },
        {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64), "scores": np.zeros(0, np.float32)},
        {"boxes": np.array([[0, 0, 100, 100]], np.float32), "labels": np.array([3]), "scores": np.array([0.9])},
    ]
    return images, detections


# --- fast: configuration and the missing package -----------------------------------------------------------


def test_missing_openvino_is_one_line_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependency, match=r'pip install "defr\[openvino\]"') as e:
        load_backend(tmp_path / "model.onnx", runtime="openvino")
    assert "\n" not in str(e.value) and "openvino" in str(e.value)


def test_config_is_validated():
    assert OpenVinoConfig(threads=2, streams=1, hint="throughput").properties("bf16") == {
        "PERFORMANCE_HINT": "THROUGHPUT",
        "INFERENCE_PRECISION_HINT": "bf16",
        "INFERENCE_NUM_THREADS": 2,
        "NUM_STREAMS": 1,
    }
    assert OpenVinoConfig().properties("fp32")["INFERENCE_PRECISION_HINT"] == "f32"  # never OpenVINO's default
    for bad in ({"threads": 0}, {"streams": 0}, {"hint": "fast"}):
        with pytest.raises(ConfigError):
            OpenVinoConfig(**bad)


def test_bench_runtime_applies_to_onnx_files():
    with pytest.raises(ConfigError, match="--backends"):
        BenchConfig(model="tiny-vit", image_size=64, runtime="openvino")
    with pytest.raises(ConfigError, match="runtime must be"):
        BenchConfig(model="model.onnx", runtime="tvm")
    BenchConfig(model="tiny-vit", image_size=64, backends=("openvino", "openvino-bf16", "openvino-int8"))


# --- slow: compiled models -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_fp32_equals_onnx_runtime(export):
    folder = export[1]
    backend = load_backend(folder / "model.onnx", runtime="openvino")
    assert (backend.name, backend.precision, backend.accepts_no_pairs) == ("openvino", "fp32", False)
    assert backend.meta == load_backend(folder / "model.onnx", providers=["CPUExecutionProvider"]).meta
    ort = load_backend(folder / "model.onnx", providers=["CPUExecutionProvider"])
    cases = [example_inputs(64, b, p, seed=b + p) for b, p in ((1, 1), (1, 16), (3, 7), (8, 40))]
    for inputs in [*cases, edge_inputs(64)]:
        got, want = backend(*inputs), ort(*inputs)
        assert [tuple(g.shape) for g in got] == [tuple(w.shape) for w in want]
        assert got[0].dtype == got[1].dtype == torch.float32
        assert max(max_abs(g, w) for g, w in zip(got, want, strict=True)) <= FP32_TOL


@pytest.mark.slow
def test_detector_handles_frames_without_pairs_like_onnx_runtime(export):
    folder = export[1]
    images, detections = frames()
    want = HOIDetector.from_onnx(folder / "model.onnx", ["CPUExecutionProvider"]).detect(images, detections)
    got = HOIDetector.from_onnx(folder / "model.onnx", runtime="openvino").detect(images, detections)
    assert [len(r) for r in got] == [len(r) for r in want] and len(want[0]) > 0 and len(want[1]) == 0
    for w, g in zip(want, got, strict=True):
        assert torch.equal(w.hoi, g.hoi) and torch.equal(w.boxes_h, g.boxes_h)
        assert max_abs(w.scores, g.scores) <= FP32_TOL and max_abs(w.image_logits, g.image_logits) <= FP32_TOL
    only_empty = HOIDetector.from_onnx(folder / "model.onnx", runtime="openvino").detect(images[1:], detections[1:])
    assert [len(r) for r in only_empty] == [0, 0]
    assert max_abs(only_empty[0].image_logits, want[1].image_logits) <= FP32_TOL
    with pytest.raises(BackendError, match="at least one pair"):
        got_backend = load_backend(folder / "model.onnx", runtime="openvino")
        got_backend(torch.zeros(1, 3, 64, 64), torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))


def _int8_agreement(got: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(mean |Δ| / std of ref, Pearson correlation) of two logit tensors."""
    corr = float(np.corrcoef(got.flatten().numpy(), ref.flatten().numpy())[0, 1])
    return float((got - ref).abs().mean() / ref.std()), corr


@pytest.mark.slow
def test_int8_computes_what_onnx_runtime_computes_on_the_same_file(export):
    """The file has one meaning: OpenVINO's int8 pair and image logits equal ONNX Runtime's (the kernels
    OnnxBackend runs) within int8 rounding (INT8_VS_ORT_*), on several batch and pair counts."""
    folder = export[1]
    backend = load_backend(folder / "model.int8.onnx", runtime="openvino", openvino=OpenVinoConfig(threads=1))
    ort_int8 = load_backend(folder / "model.int8.onnx", providers=["CPUExecutionProvider"])
    for b, p in ((1, 16), (4, 24), (8, 40)):
        inputs = example_inputs(64, b, p, seed=b)
        for got, want in zip(backend(*inputs), ort_int8(*inputs), strict=True):
            scale = float(want.std())
            assert float((got - want).abs().mean()) <= INT8_VS_ORT_MEAN_REL * scale, (b, p)
            assert max_abs(got, want) <= INT8_VS_ORT_MAX_REL * scale, (b, p)


@pytest.mark.slow
def test_int8_runs_the_quantized_file_and_agrees_with_fp32(export):
    folder = export[1]
    backend = load_backend(folder / "model.int8.onnx", runtime="openvino")
    assert backend.precision == "int8"
    inputs = example_inputs(64, 4, 40, seed=3)
    inputs = (torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 4 - 2, *inputs[1:])
    fp32 = load_backend(folder / "model.onnx", providers=["CPUExecutionProvider"])(*inputs)
    ort_int8 = load_backend(folder / "model.int8.onnx", providers=["CPUExecutionProvider"])(*inputs)
    got = backend(*inputs)
    for k in range(2):
        rel, corr = _int8_agreement(got[k], fp32[k])
        assert rel <= INT8_MEAN_REL and corr >= INT8_MIN_CORR, (k, rel, corr)
        assert max_abs(got[k], fp32[k]) > 1e-3  # the file really is quantized: not fp32 in disguise
        assert _int8_agreement(ort_int8[k], fp32[k])[0] <= INT8_MEAN_REL
    with pytest.raises(ConfigError, match="int8"):
        load_backend(folder / "model.int8.onnx", runtime="openvino", precision="bf16")
    with pytest.raises(ConfigError, match="fp16"):
        load_backend(folder / "model.fp16.onnx", runtime="openvino")


@pytest.mark.slow
def test_bf16_runs_or_says_the_cpu_cannot(export, monkeypatch):
    folder = export[1]
    if cpu_bf16():
        inputs = example_inputs(64, 2, 16, seed=5)
        fp32 = load_backend(folder / "model.onnx", providers=["CPUExecutionProvider"])(*inputs)
        backend = load_backend(folder / "model.onnx", runtime="openvino", precision="bf16")
        assert backend.precision == "bf16"
        for got, want in zip(backend(*inputs), fp32, strict=True):
            assert float((got - want).abs().mean() / want.std()) <= BF16_MEAN_REL
            assert max_abs(got, want) <= BF16_MAX_ABS
    monkeypatch.setattr(ovb, "cpu_has_bf16", lambda core: False)
    with pytest.raises(BackendError, match="no bf16 instructions") as e:
        load_backend(folder / "model.onnx", runtime="openvino", precision="bf16")
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_sidecar_is_checked_before_openvino_reads(export, tmp_path, monkeypatch):
    folder = tmp_path / "copy"
    shutil.copytree(export[1], folder)
    data = bytearray((folder / "model.onnx").read_bytes())
    data[-1] ^= 1
    (folder / "model.onnx").write_bytes(bytes(data))
    read = []
    monkeypatch.setattr(ov.Core, "read_model", lambda *a, **k: read.append(a) or None)
    with pytest.raises(ValueError, match="checksum"):
        load_backend(folder / "model.onnx", runtime="openvino")
    assert read == []


@pytest.mark.slow
def test_cache_is_written_verified_and_reused(export, tmp_path, monkeypatch):
    folder = tmp_path / "copy"
    shutil.copytree(export[1], folder)
    path = folder / "model.onnx"
    inputs = example_inputs(64, 2, 9)
    want = load_backend(path, providers=["CPUExecutionProvider"])(*inputs)
    load_backend(path, runtime="openvino", openvino=OpenVinoConfig(cache=True))
    blob, record = cache_paths(path, cache_key(sha256(path), "fp32"))
    assert blob.is_file() and record.is_file()
    assert read_verified_blob(blob, record, sha256(path), cache_key(sha256(path), "fp32")) is not None

    def no_compile(*a, **k):
        raise AssertionError("compiled from the source although a verified cache is present")

    monkeypatch.setattr(ovb, "compile_model", no_compile)
    cached = load_backend(path, runtime="openvino", openvino=OpenVinoConfig(cache=True, threads=1))
    assert max(max_abs(g, w) for g, w in zip(cached(*inputs), want, strict=True)) <= FP32_TOL


@pytest.mark.slow
def test_planted_or_tampered_cache_is_never_loaded(export, tmp_path):
    """A blob of ANOTHER compiled model (the int8 file's) planted under the fp32 file's key: without a
    record, with a forged record of the wrong hash, or with a record for another source, it is not
    loaded (the outputs stay fp32's), and the cache is rewritten from the source."""
    folder = tmp_path / "copy"
    shutil.copytree(export[1], folder)
    path, int8 = folder / "model.onnx", folder / "model.int8.onnx"
    inputs = example_inputs(64, 2, 9)
    want = load_backend(path, providers=["CPUExecutionProvider"])(*inputs)
    load_backend(int8, runtime="openvino", openvino=OpenVinoConfig(cache=True))
    int8_blob = cache_paths(int8, cache_key(sha256(int8), "int8"))[0].read_bytes()
    key = cache_key(sha256(path), "fp32")
    blob, record = cache_paths(path, key)
    honest = {"format": ovb.CACHE_FORMAT, "key": key, "source_sha256": sha256(path)}
    records = [
        None,
        {**honest, "blob_size": len(int8_blob), "blob_sha256": "0" * 64},
        {**honest, "source_sha256": "1" * 64, "blob_size": len(int8_blob), "blob_sha256": _sha(int8_blob)},
        {**honest, "format": "other", "blob_size": len(int8_blob), "blob_sha256": _sha(int8_blob)},
    ]
    for planted in records:
        blob.write_bytes(int8_blob)
        record.unlink(missing_ok=True)
        if planted is not None:
            record.write_text(json.dumps(planted))
        assert read_verified_blob(blob, record, sha256(path), key) is None
        got = load_backend(path, runtime="openvino", openvino=OpenVinoConfig(cache=True))(*inputs)
        assert max(max_abs(g, w) for g, w in zip(got, want, strict=True)) <= FP32_TOL, planted
        assert read_verified_blob(blob, record, sha256(path), key) is not None  # rewritten from the source
    # a consistent record whose blob was truncated afterwards
    blob.write_bytes(blob.read_bytes()[:-10])
    assert read_verified_blob(blob, record, sha256(path), key) is None


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_selection_through_load_detector(export):
    checkpoint, folder = export
    detector = load_detector(folder / "model.onnx", runtime="openvino")
    assert detector.backend.name == "openvino" and detector.backend.precision == "fp32"
    assert load_detector(folder / "model.int8.onnx", runtime="openvino").backend.precision == "int8"
    assert load_detector(folder / "model.onnx", runtime="onnxruntime").backend.name == "onnxruntime"
    with pytest.raises(ConfigError, match="exported .onnx"):
        load_detector(checkpoint, runtime="openvino")
    with pytest.raises(ConfigError, match="OpenVINO runs on the CPU, not 'cuda'"):
        load_detector(folder / "model.onnx", device="cuda", runtime="openvino")
    with pytest.raises(ConfigError, match="providers is ONNX Runtime's option, not OpenVINO's"):
        HOIDetector.from_onnx(folder / "model.onnx", providers=["CPUExecutionProvider"], runtime="openvino")
    with pytest.raises(ConfigError, match=r"not bf16 \(runtime openvino does\)"):
        HOIDetector.from_onnx(folder / "model.onnx", precision="bf16")
    with pytest.raises(ConfigError, match="runtime must be"):
        HOIDetector.from_onnx(folder / "model.onnx", runtime="tvm")


@pytest.mark.slow
def test_cli_selects_the_runtime(export, tmp_path):
    checkpoint, folder = export
    images, detections = frames()
    (tmp_path / "images").mkdir()
    (tmp_path / "dets").mkdir()
    for i, (image, dets) in enumerate(zip(images, detections, strict=True)):
        Image.fromarray(image).save(tmp_path / "images" / f"f{i}.png")
        entry = {k: np.asarray(v).tolist() for k, v in dets.items()}
        (tmp_path / "dets" / f"f{i}.json").write_text(json.dumps(entry))
    common = ["--model", str(folder / "model.onnx"), "--images", str(tmp_path / "images")]
    common += ["--detections", str(tmp_path / "dets")]
    for runtime in ("onnxruntime", "openvino"):
        out = tmp_path / f"{runtime}.json"
        r = CliRunner().invoke(defr_main, ["detect", *common, "--runtime", runtime, "--out", str(out)])
        assert r.exit_code == 0, r.output
    want, got = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("onnxruntime", "openvino"))
    assert want.keys() == got.keys() and sum(len(e["hoi"]) for e in want.values()) > 0
    for name in want:
        assert want[name]["hoi"] == got[name]["hoi"]
        assert np.allclose(want[name]["scores"], got[name]["scores"], atol=FP32_TOL)
    bf16 = ["detect", *common, "--runtime", "openvino", "--precision", "bf16", "--out", str(tmp_path / "b.json")]
    r = CliRunner().invoke(defr_main, bf16)
    if cpu_bf16():
        assert r.exit_code == 0, r.output
    else:
        assert r.exit_code == 1 and "no bf16 instructions" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(defr_main, ["detect", *common, "--precision", "bf16", "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 1 and "runtime openvino does" in r.output and len(r.output.splitlines()) == 1
    ckpt = ["detect", "--checkpoint", str(checkpoint), *common[2:], "--runtime", "openvino", "--out", "x.json"]
    r = CliRunner().invoke(defr_main, ckpt)
    assert r.exit_code == 1 and "applies to exported .onnx" in r.output
    bench = ["bench", "--model", str(folder / "model.int8.onnx"), "--runtime", "openvino", "--batch", "2"]
    bench += ["--pairs", "0,3", "--warmup", "0", "--repeats", "1", "--json", str(tmp_path / "bench.json")]
    r = CliRunner().invoke(defr_main, bench)
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [(row["backend"], row["precision"], row["pairs"]) for row in rows] == [
        ("openvino", "int8", 0),
        ("openvino", "int8", 3),
    ]


@pytest.mark.slow
def test_bench_builds_openvino_beside_onnx_runtime(export, tmp_path):
    checkpoint, _ = export
    cfg = BenchConfig(model=str(checkpoint), backends=("onnxruntime", "openvino", "openvino-int8"), threads=1)
    backends, size = build_backends(cfg, tmp_path)
    assert size == 64
    assert [(name, b.precision) for name, b in backends] == [
        ("onnxruntime", "fp32"),
        ("openvino", "fp32"),
        ("openvino", "int8"),
    ]
    inputs = example_inputs(64, 2, 4)
    assert max_abs(backends[0][1](*inputs)[0], backends[1][1](*inputs)[0]) <= FP32_TOL


@pytest.mark.slow
def test_accuracy_gate_has_openvino_rows(export, tmp_path):
    """The gate's OpenVINO int8 row on the real int8 file: the same metrics as ONNX Runtime's rows;
    with fp32's own graph as "int8" the OpenVINO row equals float32 (drop 0, passed)."""
    from defr.data import generate_synthetic
    from defr.export.accuracy import accuracy_gate
    from defr.export.calibration import load_calibration_set
    from defr.runtime.sidecar import read_sidecar

    folder = export[1]
    meta = read_sidecar(folder / "model.onnx").meta
    generate_synthetic(tmp_path / "synth", images=40, seed=0, size=64)
    held_out = load_calibration_set(tmp_path / "synth", 8, meta, tmp_path / "work")
    files = {"fp32": folder / "model.onnx", "int8": folder / "model.int8.onnx"}
    lines = []
    result = accuracy_gate(files, held_out, 100.0, log=lines.append)
    assert set(result.openvino) == ({"int8", "bf16"} if cpu_bf16() else {"int8"})
    row = result.openvino["int8"]
    assert set(row) == {"logits", "metrics", "drop", "passed"} and row["passed"]
    assert set(row["metrics"]) == set(result.metrics["int8"]) and set(row["drop"]) == set(result.drop)
    assert row["logits"]["max_abs_pair"] > 0 and "OpenVINO int8" in lines[0]
    assert cpu_bf16() or "bf16 row not run: this CPU has no bf16 instructions" in result.note
    same = accuracy_gate({"fp32": files["fp32"], "int8": files["fp32"]}, held_out, 1.0, log=print)
    row = same.openvino["int8"]
    assert row["passed"] and row["logits"]["max_abs_pair"] <= FP32_TOL
    assert all(abs(d) <= 1e-6 for d in row["drop"].values()) and row["drop"]
    assert row["metrics"] == pytest.approx(same.metrics["fp32"], abs=1e-6)
    assert json.dumps(same.to_dict())  # model.json's int8.gate


@pytest.mark.slow
def test_video_cli_selects_the_runtime(export, tmp_path):
    _, folder = export
    images, detections = frames()
    (tmp_path / "frames").mkdir()
    rows = []
    for i, (image, dets) in enumerate(zip(images, detections, strict=True)):
        Image.fromarray(image[:90, :120]).save(tmp_path / "frames" / f"{i:04d}.png")
        rows.append({"frame": i, **{k: np.asarray(v).tolist() for k, v in dets.items()}})
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for runtime in ("onnxruntime", "openvino"):
        args = ["video", str(tmp_path / "frames"), "--model", str(folder / "model.onnx"), "--runtime", runtime]
        args += ["--detector", f"detections:{tmp_path / 'd.jsonl'}", "--frames", str(tmp_path / f"{runtime}.jsonl")]
        r = CliRunner().invoke(defr_main, [*args, "--no-progress"])
        assert r.exit_code == 0, r.output
    want, got = (
        [json.loads(line) for line in (tmp_path / f"{n}.jsonl").read_text().splitlines()]
        for n in ("onnxruntime", "openvino")
    )
    assert len(want) == len(got) == 3
    assert [f["hoi"] for f in want] == [f["hoi"] for f in got] and any(f["hoi"] for f in want)
    for w, g in zip(want, got, strict=True):
        assert np.allclose(w["scores"], g["scores"], atol=FP32_TOL)
