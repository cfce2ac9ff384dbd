"""Checkpoint files that cannot load: one loader, one clear one-line message, in every command that reads them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import save_file

from defr.cli import main
from defr.export.cli import main as export_main
from defr.model import CheckpointError, create_model, load_model, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(create_model("tiny-vit", 32), path)
    return path


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
def test_broken_checkpoints_give_one_line_everywhere(checkpoint, detect_inputs, tmp_path, case, message):
    folder = detect_inputs
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
