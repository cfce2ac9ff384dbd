"""``defr.files``: what the project writes (datasets, checkpoints, results, exports) follows the user's umask."""

from __future__ import annotations

import os
import stat

import pytest
from click.testing import CliRunner

from defr.cli import main
from defr.export import ExportConfig, export_model
from defr.model import create_model, save_checkpoint


@pytest.mark.slow
def test_created_files_and_folders_follow_the_umask(tmp_path, detect_inputs):
    from defr.data import generate_synthetic
    from defr.train import TrainConfig, train

    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(create_model("tiny-vit", 32), checkpoint)
    folder = detect_inputs
    old = os.umask(0o022)
    try:
        synth = generate_synthetic(tmp_path / "synth", images=16, seed=0, size=32)
        assert stat.S_IMODE(synth.stat().st_mode) == 0o755
        run = tmp_path / "run"
        cfg = TrainConfig(dataset="synth", data_root=str(synth), init="random", epochs=1, batch_size=8,
                          image_size=32, min_positives=1, output=str(run))  # fmt: skip
        train(cfg)
        results = tmp_path / "results.json"
        detect = ["detect", "--checkpoint", str(checkpoint), "--images", str(folder / "images")]
        r = CliRunner().invoke(main, [*detect, "--detections", str(folder / "dets.jsonl"), "--out", str(results)])
        assert r.exit_code == 0, r.output
        export_model(checkpoint, tmp_path / "export", ExportConfig(verify=False), log=lambda m: None)
        for path in (run / "model.safetensors", run / "train_state.pt", results, tmp_path / "export" / "model.onnx"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
        assert stat.S_IMODE((tmp_path / "export").stat().st_mode) == 0o755
    finally:
        os.umask(old)
