"""``mask_mode`` (hard / released) end to end: export (baked, recorded), ONNX Runtime vs PyTorch, runtime, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from defr import vocab
from defr.cli import main
from defr.errors import ConfigError
from defr.export import ExportConfig, export_model
from defr.export.cli import main as export_main
from defr.model import create_model, save_checkpoint
from defr.runtime import HOIDetector, load_backend
from defr.runtime.sidecar import read_sidecar

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """(checkpoint, {mode: export folder}) of one tiny model exported in both modes (verified)."""
    root = tmp_path_factory.mktemp("modes")
    checkpoint = root / "tiny.safetensors"
    save_checkpoint(create_model("tiny-vit", 64), checkpoint)
    folders = {}
    for mode in ("hard", "released"):
        result = export_model(checkpoint, root / mode, ExportConfig(mask_mode=mode), log=lambda m: None)
        assert result.comparisons["fp32"]["passed"]  # ORT vs PyTorch in this mode, several (B, P)
        assert result.comparisons["fp32"]["max_abs"]["pair_logits"] <= 1e-4
        folders[mode] = root / mode
    return checkpoint, folders


def _frames():
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (70, 90, 3), dtype=np.uint8) for _ in range(2)]
    dets = {
        "boxes": np.array([[5, 5, 40, 60], [30, 10, 85, 50], [0, 30, 20, 69]], np.float32),
        "labels": np.array([vocab.PERSON, 2, 7]),
        "scores": np.array([0.95, 0.9, 0.8], np.float32),
    }
    return images, [dets, dets]


@pytest.mark.slow
def test_the_mode_is_recorded_and_enforced(exports):
    _, folders = exports
    for mode, folder in folders.items():
        assert read_sidecar(folder / "model.onnx").graph.mask_mode == mode
        assert load_backend(folder / "model.onnx", providers=["CPUExecutionProvider"]).mask_mode == mode
    with pytest.raises(ConfigError, match="exported with mask_mode 'released', not 'hard'.*--mask-mode hard"):
        load_backend(folders["released"] / "model.onnx", providers=["CPUExecutionProvider"], mask_mode="hard")


@pytest.mark.slow
def test_onnx_equals_pytorch_in_each_mode_and_the_modes_differ(exports):
    checkpoint, folders = exports
    images, dets = _frames()
    scores = {}
    for mode, folder in folders.items():
        torch_results = HOIDetector.from_checkpoint(checkpoint, mask_mode=mode).detect(images, dets)
        onnx_results = HOIDetector.from_onnx(folder / "model.onnx", ["CPUExecutionProvider"]).detect(images, dets)
        for a, b in zip(torch_results, onnx_results, strict=True):
            assert torch.equal(a.hoi, b.hoi) and (a.scores - b.scores).abs().max() <= 1e-6
        scores[mode] = torch.cat([r.scores for r in torch_results])
    assert scores["hard"].shape == scores["released"].shape
    assert (scores["hard"] - scores["released"]).abs().max() > 1e-4


@pytest.mark.slow
def test_cli_mask_mode(exports, tmp_path):
    checkpoint, folders = exports
    images, dets = _frames()
    (tmp_path / "images").mkdir()
    from PIL import Image

    lines = []
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / "images" / f"{i}.png")
        entry = {k: v.tolist() for k, v in dets[i].items()}
        lines.append(json.dumps({"filename": f"{i}.png", **entry}))
    (tmp_path / "dets.jsonl").write_text("\n".join(lines))
    common = ["detect", "--images", str(tmp_path / "images"), "--detections", str(tmp_path / "dets.jsonl")]
    outs = {}
    for mode in ("hard", "released"):
        out = tmp_path / f"{mode}.json"
        r = CliRunner().invoke(main, [*common, "--checkpoint", str(checkpoint), "--mask-mode", mode, "--out", str(out)])
        assert r.exit_code == 0, r.output
        outs[mode] = json.loads(out.read_text())
    assert outs["hard"]["0.png"]["scores"] != outs["released"]["0.png"]["scores"]
    model = folders["released"] / "model.onnx"
    out = tmp_path / "onnx.json"
    r = CliRunner().invoke(main, [*common, "--model", str(model), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert np.allclose(json.loads(out.read_text())["0.png"]["scores"], outs["released"]["0.png"]["scores"], atol=1e-6)
    r = CliRunner().invoke(main, [*common, "--model", str(model), "--mask-mode", "hard", "--out", str(out)])
    assert r.exit_code == 1 and "exported with mask_mode 'released'" in r.output and len(r.output.splitlines()) == 1


@pytest.mark.slow
def test_export_cli_bakes_the_mode(exports, tmp_path):
    checkpoint, _ = exports
    r = CliRunner().invoke(export_main, [str(checkpoint), "-o", str(tmp_path / "e"), "--mask-mode", "released"])
    assert r.exit_code == 0, r.output
    assert "mask mode released" in r.output
    assert read_sidecar(tmp_path / "e" / "model.onnx").graph.mask_mode == "released"
    r = CliRunner().invoke(export_main, [str(checkpoint), "-o", str(tmp_path / "f"), "--mask-mode", "soft"])
    assert r.exit_code == 2 and "soft" in r.output


@pytest.mark.slow
def test_bench_mask_mode(tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "--model", "tiny-vit", "--image-size", "32", "--batch", "1", "--pairs", "2"]
    r = CliRunner().invoke(
        main, [*args, "--backends", "torch", "--repeats", "1", "--warmup", "0", "--json", str(tmp_path / "b.json")]
    )
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        main, [*args, "--mask-mode", "released", "--repeats", "1", "--warmup", "0", "--json", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["config"]["mask_mode"] == "released"
