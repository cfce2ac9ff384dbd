"""Regression tests of the bad-input and fault probe (issue: reliability). Each numbered case of the
issue: a clear one-line error naming the file / image / field, or correct handling; nothing written."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from defr import vocab
from defr.cli import main
from defr.export import ExportConfig, VerificationError, export_model
from defr.export.cli import main as export_main
from defr.export.verify import compare_with_torch
from defr.model import CheckpointError, create_model, load_model, save_checkpoint
from defr.runtime import BackendError, DetectionError, HOIDetector
from defr.runtime.io import InputFileError, load_detections

PERSON = vocab.PERSON


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(create_model("tiny-vit", 32), path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Two images and their detections (a JSONL file) for ``defr detect``."""
    root = tmp_path_factory.mktemp("images")
    (root / "images").mkdir()
    lines = []
    for i in range(2):
        Image.fromarray(np.full((40, 50, 3), 30 * i, np.uint8)).save(root / "images" / f"{i}.png")
        dets = {"boxes": [[0, 0, 20, 30], [10, 5, 45, 38]], "labels": [PERSON, 2], "scores": [0.9, 0.8]}
        lines.append(json.dumps({"filename": f"{i}.png", **dets}))
    (root / "dets.jsonl").write_text("\n".join(lines))
    return root


def _rewrite(src: Path, dst: Path, tensors=None, header=None) -> Path:
    """A copy of checkpoint ``src`` with some tensors or header entries replaced."""
    with safe_open(str(src), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        meta = dict(f.metadata())
    state.update(tensors or {})
    meta.update(header or {})
    save_file(state, str(dst), metadata=meta)
    return dst


def _detect(model: Path, folder: Path, out: Path, *extra) -> object:
    args = ["detect", "--checkpoint", str(model), "--images", str(folder / "images")]
    return CliRunner().invoke(main, [*args, "--detections", str(folder / "dets.jsonl"), "--out", str(out), *extra])


def _one_line(output: str) -> bool:
    return len(output.strip().splitlines()) == 1 and "Traceback" not in output


# --- 1, 2, 4. one loader, one message, for every command -------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("shapes", r"checkpoint does not match its config: wrong shapes \['backbone.positional_embedding \(10, 192\)"),
        ("cut_json", "the 'config' entry of the header: not valid JSON"),
        ("missing_field", "not a valid DEFRConfig .*class_names"),
        ("wrong_type", r"ViTConfig.image_size must be int, got 64.5"),
        ("string_type", r"ViTConfig.image_size must be int, got '64'"),
        ("pth", "not a DEFR checkpoint: neither defr's .* nor the released DEFR .pth"),
        ("nan", r"non-finite weights \(NaN or inf\) in 1 tensor\(s\): classifier"),
    ],
)
def test_broken_checkpoints_give_one_line_everywhere(checkpoint, folder, tmp_path, case, message):
    bad = tmp_path / "bad.safetensors"
    config = json.loads(safe_open(str(checkpoint), framework="pt").metadata()["config"])
    if case == "shapes":
        _rewrite(checkpoint, bad, tensors={"backbone.positional_embedding": torch.zeros(10, 192)})
    elif case == "cut_json":
        _rewrite(checkpoint, bad, header={"config": json.dumps(config)[:200]})
    elif case == "missing_field":
        _rewrite(
            checkpoint, bad, header={"config": json.dumps({k: v for k, v in config.items() if k != "class_names"})}
        )
    elif case in ("wrong_type", "string_type"):
        config["backbone"]["vit"]["image_size"] = 64.5 if case == "wrong_type" else "64"
        _rewrite(checkpoint, bad, header={"config": json.dumps(config)})
    elif case == "pth":
        bad = tmp_path / "bad.pth"
        torch.save({"weights": torch.zeros(3)}, bad)
    else:
        _rewrite(checkpoint, bad, tensors={"classifier": torch.full((600, 192), float("nan"))})
    with pytest.raises(CheckpointError, match=message):
        load_model(bad)
    r = _detect(bad, folder, tmp_path / "out.json")
    assert r.exit_code == 1 and _one_line(r.output) and str(bad) in r.output, r.output
    data = folder  # any folder: the checkpoint fails first
    r = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(bad), "--dataset", "synth", "--data-root", str(data)])
    assert r.exit_code == 1 and _one_line(r.output) and str(bad) in r.output, r.output
    r = CliRunner().invoke(export_main, [str(bad), "-o", str(tmp_path / "export")])
    assert r.exit_code == 2 and _one_line(r.output) and str(bad) in r.output, r.output
    assert not (tmp_path / "out.json").exists() and not (tmp_path / "export").exists()


# --- 3. an unwritable output folder is refused before any work -------------------------------------------------


def test_unwritable_export_folder_is_refused_before_the_work(checkpoint, tmp_path, monkeypatch):
    import defr.export.exporter as exporter

    out = tmp_path / "export"
    out.mkdir()

    class Refused:
        def __init__(self, dir, prefix):  # noqa: A002 (tempfile's name)
            if Path(dir) == out:
                raise PermissionError(13, "Permission denied")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(exporter.tempfile, "NamedTemporaryFile", Refused)
    monkeypatch.setattr(exporter, "load_model", lambda *a: pytest.fail("the export started before the check"))
    r = CliRunner().invoke(export_main, [str(checkpoint), "-o", str(out)])
    assert r.exit_code == 2 and "cannot write into" in r.output and "Permission denied" in r.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders: the monkeypatched test covers it")
def test_read_only_export_folder(checkpoint, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    out.chmod(0o555)
    r = CliRunner().invoke(export_main, [str(checkpoint), "-o", str(out)])
    assert r.exit_code == 2 and "cannot write into" in r.output


# --- 5. non-finite outputs ---------------------------------------------------------------------------------------


def test_non_finite_outputs_fail_verification_and_the_runtime(checkpoint, folder, tmp_path):
    export_model(checkpoint, tmp_path / "export", ExportConfig(verify=False), log=lambda m: None)
    path = tmp_path / "export" / "model.onnx"
    proto = onnx.load(str(path))
    ln_post = next(t for t in proto.graph.initializer if numpy_helper.to_array(t).shape == (192,))
    ln_post.CopyFrom(numpy_helper.from_array(np.full((192,), np.nan, np.float32), ln_post.name))
    onnx.save(proto, str(path))
    result = compare_with_torch(path, load_model(checkpoint), "fp32")
    assert not result.passed and max(result.max_abs.values()) == float("inf")
    sidecar = json.loads((tmp_path / "export" / "model.json").read_text())
    from defr.runtime.sidecar import sha256

    sidecar["files"]["model.onnx"]["sha256"] = sha256(path)
    (tmp_path / "export" / "model.json").write_text(json.dumps(sidecar))
    detector = HOIDetector.from_onnx(path, ["CPUExecutionProvider"])
    image = np.zeros((40, 50, 3), np.uint8)
    dets = {"boxes": [[0, 0, 20, 30], [10, 5, 45, 38]], "labels": [PERSON, 2], "scores": [0.9, 0.8]}
    with pytest.raises(BackendError, match="onnxruntime backend returned NaN or inf logits for frame.png"):
        detector.detect([image], [dets], names=["frame.png"])
    r = CliRunner().invoke(
        main,
        ["detect", "--model", str(path), "--images", str(folder / "images"), "--detections",
         str(folder / "dets.jsonl"), "--out", str(tmp_path / "out.json")],
    )  # fmt: skip
    assert r.exit_code == 1 and "NaN or inf logits" in r.output and not (tmp_path / "out.json").exists()


def test_verification_error_on_a_nan_graph_is_a_failed_export(checkpoint, tmp_path, monkeypatch):
    """The export's own verification fails (exit 1, nothing written) when ONNX Runtime gives NaN."""
    import defr.export.exporter as exporter

    real = exporter.compare_with_torch

    def nan_graph(path, model, precision, **kw):
        proto = onnx.load(str(path))
        first = proto.graph.initializer[0]
        first.CopyFrom(
            numpy_helper.from_array(np.full(numpy_helper.to_array(first).shape, np.nan, np.float32), first.name)
        )
        onnx.save(proto, str(path))
        return real(path, model, precision, **kw)

    monkeypatch.setattr(exporter, "compare_with_torch", nan_graph)
    with pytest.raises(VerificationError, match="disagrees with PyTorch"):
        export_model(checkpoint, tmp_path / "export", log=lambda m: None)
    assert not (tmp_path / "export").exists()


# --- 8, 9. detections of the wrong JSON types; one image with a list of detections -----------------------------


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"boxes": [[0, 0, 5, 5]], "labels": ["22"], "scores": [0.9]}, r"labels is not a numeric array: '22' \(str\)"),
        ({"boxes": [[0, 0, 5, 5]], "labels": [22], "scores": [True]}, r"scores is not a numeric array: True \(bool\)"),
        ({"boxes": [[0, "0", 5, 5]], "labels": [22], "scores": [0.5]}, "boxes is not a numeric array"),
        ({"boxes": [[0, 0, 5, 5]], "labels": [22.5], "scores": [0.5]}, "labels must be whole numbers"),
    ],
)
def test_detections_of_the_wrong_json_types_are_refused(tmp_path, entry, message):
    path = tmp_path / "dets.jsonl"
    path.write_text(json.dumps({"filename": "a.jpg", **entry}))
    with pytest.raises(InputFileError, match=f"a.jpg.*{message}"):
        load_detections(path, ["a.jpg"])


def test_detections_of_the_wrong_types_through_the_api(tiny_model):
    from defr.runtime import TorchBackend

    detector = HOIDetector(TorchBackend(tiny_model))
    image = np.zeros((40, 50, 3), np.uint8)
    with pytest.raises(DetectionError, match="frame: labels is not a numeric array: '22'"):
        detector.detect([image], [{"boxes": [[0, 0, 5, 5]], "labels": ["22"], "scores": [0.9]}], names=["frame"])
    dets = {"boxes": [[0, 0, 5, 5]], "labels": [PERSON], "scores": [0.9]}
    with pytest.raises(DetectionError, match=r"one image \(ndarray\) and a list of 1 detection entries"):
        detector.detect(image, [dets])


# --- 12. a training run that fails on bad input leaves nothing -------------------------------------------------


def test_failed_training_leaves_no_output_folder(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(
        main, ["train", "--dataset", "synth", "--data-root", str(tmp_path / "nowhere"), "--output", str(out)]
    )
    assert r.exit_code == 1 and _one_line(r.output) and not out.exists()


# --- 13. files follow the umask --------------------------------------------------------------------------------


def test_created_files_and_folders_follow_the_umask(tmp_path, folder, checkpoint):
    from defr.data import generate_synthetic
    from defr.train import TrainConfig, train

    old = os.umask(0o022)
    try:
        synth = generate_synthetic(tmp_path / "synth", images=16, seed=0, size=32)
        assert stat.S_IMODE(synth.stat().st_mode) == 0o755
        run = tmp_path / "run"
        cfg = TrainConfig(dataset="synth", data_root=str(synth), init="random", epochs=1, batch_size=8,
                          image_size=32, min_positives=1, output=str(run))  # fmt: skip
        train(cfg)
        results = tmp_path / "results.json"
        assert _detect(checkpoint, folder, results).exit_code == 0
        export_model(checkpoint, tmp_path / "export", ExportConfig(verify=False), log=lambda m: None)
        for path in (run / "model.safetensors", run / "train_state.pt", results, tmp_path / "export" / "model.onnx"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
        assert stat.S_IMODE((tmp_path / "export").stat().st_mode) == 0o755
    finally:
        os.umask(old)
