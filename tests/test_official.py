"""Importing the released DEFR checkpoint layout (DESIGN.md §3) from a small synthetic file."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from defr import vocab
from defr.model import load_checkpoint, save_checkpoint
from defr.model.official import OfficialCheckpointError, is_official_checkpoint, load_official_checkpoint

open_clip = pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def reference():
    """An OpenAI-CLIP-style visual tower (open_clip's implementation, QuickGELU) with width 64, 2 blocks,
    patch 16, grid 4, every parameter randomised; ``proj`` = identity so it outputs ln_post(CLS)."""
    from open_clip.transformer import QuickGELU, VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(
        image_size=64, patch_size=16, width=64, layers=2, heads=1, mlp_ratio=4.0, output_dim=64, act_layer=QuickGELU
    )
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(0.1 * torch.randn_like(p))
        vit.proj.copy_(torch.eye(64))
    return vit.eval()


def released_state(reference, classes: int = 600) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    state = {f"visual_encoder.visual.{k}": v.clone() for k, v in reference.state_dict().items() if k != "proj"}
    state["classifier"] = torch.randn(classes, 64)
    state["logit_scale"] = torch.tensor(4.61)
    return {f"module.{k}": v for k, v in state.items()}


@pytest.fixture(scope="module")
def official_file(reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("official") / "defr_official.pth"
    torch.save({"model_state_dict": released_state(reference), "epoch": 10}, path)
    return path


def test_logits_match_a_manual_forward(reference, official_file):
    model = load_official_checkpoint(official_file)
    vit = model.cfg.backbone.vit
    assert (vit.width, vit.layers, vit.heads, vit.patch_size, vit.grid_size) == (64, 2, 1, 16, 4)
    assert vit.act == "quick_gelu" and model.cfg.image_size == 64 and model.cfg.head == "clip"
    assert model.cfg.class_names == vocab.hico().class_names
    assert float(model.logit_scale) == pytest.approx(4.61)
    classifier = torch.load(official_file, weights_only=True)["model_state_dict"]["module.classifier"]
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        manual = math.exp(4.61) * F.normalize(reference(x), dim=-1) @ classifier.t()
        logits = model(x)
    assert logits.shape == (3, 600)
    torch.testing.assert_close(logits, manual, rtol=1e-4, atol=1e-3)


def test_another_image_size_interpolates(official_file):
    model = load_official_checkpoint(official_file, image_size=96)
    assert model.cfg.image_size == 96 and model.backbone.positional_embedding.shape == (37, 64)
    assert model.cfg.backbone.extra["pretrain_image_size"] == 64
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 96, 96))
    assert logits.shape == (2, 600) and torch.isfinite(logits).all()
    boxes = torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    with torch.no_grad():
        pairs = model.forward_pairs(torch.randn(1, 3, 96, 96), boxes, boxes, torch.zeros(1, dtype=torch.long))
    assert pairs.shape == (1, 600)


def test_round_trip_through_our_checkpoint(official_file, tmp_path):
    model = load_official_checkpoint(official_file)
    save_checkpoint(model, tmp_path / "converted.safetensors")
    again = load_checkpoint(tmp_path / "converted.safetensors")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))


def test_is_official_checkpoint(official_file, tmp_path):
    assert is_official_checkpoint(official_file)
    torch.save({"state_dict": {"a": torch.zeros(1)}}, tmp_path / "other.pt")
    (tmp_path / "text.txt").write_text("hello")
    assert not is_official_checkpoint(tmp_path / "other.pt")
    assert not is_official_checkpoint(tmp_path / "text.txt")
    assert not is_official_checkpoint(tmp_path / "missing.pth")


def test_wrong_files_are_clear_errors(reference, tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(OfficialCheckpointError, match="junk.pth: not a released DEFR checkpoint"):
        load_official_checkpoint(tmp_path / "junk.pth")
    with pytest.raises(OfficialCheckpointError, match="no such file"):
        load_official_checkpoint(tmp_path / "missing.pth")
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(OfficialCheckpointError, match="no 'model_state_dict'"):
        load_official_checkpoint(tmp_path / "other.pth")

    state = released_state(reference)
    del state["module.classifier"]
    torch.save({"model_state_dict": state}, tmp_path / "no_classifier.pth")
    with pytest.raises(OfficialCheckpointError, match=r"missing \['classifier'\]"):
        load_official_checkpoint(tmp_path / "no_classifier.pth")

    torch.save({"model_state_dict": released_state(reference, classes=117)}, tmp_path / "verbs.pth")
    with pytest.raises(OfficialCheckpointError, match=r"shape \(117, 64\), expected \[600, D\]"):
        load_official_checkpoint(tmp_path / "verbs.pth")

    state = released_state(reference)
    del state["module.visual_encoder.visual.transformer.resblocks.1.mlp.c_fc.bias"]
    torch.save({"model_state_dict": state}, tmp_path / "partial.pth")
    with pytest.raises(OfficialCheckpointError, match=r"missing 1 \[transformer.resblocks.\*.mlp.c_fc.bias\]"):
        load_official_checkpoint(tmp_path / "partial.pth")


def test_pickled_code_is_refused(tmp_path):
    torch.save({"model_state_dict": {"module.classifier": torch.zeros(1)}, "cfg": _Config()}, tmp_path / "code.pth")
    with pytest.raises(OfficialCheckpointError, match="not a released DEFR checkpoint"):
        load_official_checkpoint(tmp_path / "code.pth")


class _Config:
    """An arbitrary class: unpickling it would execute code, so weights_only refuses the file."""
