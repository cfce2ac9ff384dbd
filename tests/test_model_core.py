import math

import pytest
import torch

from defr import vocab
from defr.model import (
    DEFR,
    CheckpointError,
    DEFRConfig,
    backbone_spec,
    load_checkpoint,
    pair_masks,
    save_checkpoint,
)
from defr.model.vit import resize_positional_embedding


def test_vocabulary_shape_and_prompts():
    v = vocab.hico()
    assert (v.num_classes, len(v.verbs), len(v.objects), len(v.rare), len(v.non_rare)) == (600, 117, 80, 138, 462)
    assert v.objects[vocab.PERSON] == "person"
    assert v.phrase(10) == "a person carrying a bicycle"
    assert v.phrase(9) == "a person and an airplane"  # no_interaction
    assert [len(v.few[k]) for k in (1, 5, 10)] == [49, 125, 162]
    assert v.prompts(("a photo of {}.",))[10] == ["a photo of a person carrying a bicycle."]
    assert vocab.gerund("lie") == "lying" and vocab.gerund("hop") == "hopping" and vocab.gerund("ride") == "riding"


def test_pair_masks_follow_floor_ceil_rule():
    # S = 64, patch 16 → G = 4; x1 = 17 → col 1, x2 = 33 → ceil(2.06) = 3
    m = pair_masks(torch.tensor([[17.0, 0, 33, 16]]), torch.tensor([[0.0, 48, 16, 64]]), 64, 16).view(4, 4)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0, 1:3] = True
    expected[3, 0] = True
    assert torch.equal(m, expected)
    # boxes outside the image are clamped; a zero-size box on a patch border covers nothing
    outside = pair_masks(torch.tensor([[-50.0, -50, 500, 500]]), torch.tensor([[32.0, 32, 32, 32]]), 64, 16)
    assert outside.all()
    empty = pair_masks(torch.tensor([[32.0, 32, 32, 32]]), torch.tensor([[16.0, 16, 16, 16]]), 64, 16)
    assert not empty.any()


def test_fast_pairs_equal_dense_reference(tiny_model):
    torch.manual_seed(1)
    images = torch.randn(3, 3, 64, 64)
    xy = torch.rand(9, 2) * 64
    boxes_h = torch.cat([xy, xy + torch.rand(9, 2) * 40], 1)
    boxes_o = boxes_h.flip(0)
    pair_index = torch.tensor([0, 0, 0, 2, 2, 2, 2, 2, 2])  # image 1 has no pair
    with torch.no_grad():
        fast, image_logits = tiny_model.forward_pairs(images, boxes_h, boxes_o, pair_index, with_image_logits=True)
        dense = tiny_model.forward_pairs_dense(images, boxes_h, boxes_o, pair_index)
        assert (fast - dense).abs().max() <= 1e-4
        assert (image_logits - tiny_model(images)).abs().max() <= 1e-4


def test_positional_embedding_interpolation_keeps_cls_and_smooth_grid():
    grid = torch.linspace(0, 1, 4)
    plane = (grid[:, None] + grid[None, :]).reshape(16, 1)  # a linear ramp over the patch grid
    pos = torch.cat([torch.tensor([[7.0]]), plane], 0)
    out = resize_positional_embedding(pos, 8)
    assert out.shape == (65, 1) and out[0, 0] == 7.0
    ramp = out[1:].view(8, 8)
    assert torch.all(ramp[:, 1:] >= ramp[:, :-1] - 1e-6) and abs(ramp[0, 0].item()) < 0.2
    assert resize_positional_embedding(pos, 4) is pos
    with pytest.raises(ValueError, match="square"):
        resize_positional_embedding(torch.zeros(11, 3), 4)


def test_checkpoint_round_trip_and_bad_files(tiny_model, tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(tiny_model, path)
    loaded = load_checkpoint(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), tiny_model(x))
    assert loaded.cfg.class_names == tiny_model.cfg.class_names
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a DEFR checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_load_model_keeps_the_precise_error_of_a_broken_checkpoint(tiny_model, tmp_path):
    """load_model tells "not a model file at all" from "ours, but broken" by the error's class, not its
    text: a path that happens to contain the words keeps the real reason."""
    from safetensors.torch import save_file

    from defr.model import load_model
    from defr.model.checkpoint import CHECKPOINT_FORMAT, NotACheckpointError

    folder = tmp_path / "not a DEFR checkpoint"
    folder.mkdir()
    bad = folder / "m.safetensors"
    save_file({"x": torch.zeros(1)}, str(bad), metadata={"format": CHECKPOINT_FORMAT, "config": "{broken"})
    with pytest.raises(CheckpointError, match="'config' entry of the header.*not valid JSON") as e:
        load_model(bad)
    assert not isinstance(e.value, NotACheckpointError)
    (folder / "x.safetensors").write_bytes(b"junk")
    with pytest.raises(NotACheckpointError, match="neither defr's .* nor the released DEFR .pth"):
        load_model(folder / "x.safetensors")


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backbone 'vit-huge-typo'"):
        backbone_spec("vit-huge-typo", 224)


def test_heads_cosine_and_clip():
    spec = backbone_spec("tiny-vit", 32)
    torch.manual_seed(0)
    cosine = DEFR(DEFRConfig(spec, ["a", "b"]))
    feats = torch.randn(3, spec.feature_dim)
    expected = 100 * torch.nn.functional.cosine_similarity(feats[:, None], cosine.classifier[None], dim=-1)
    torch.testing.assert_close(cosine.classify(feats), expected, rtol=1e-4, atol=1e-4)
    # every head is cosine (Eq. 1; the released code normalises the rows in both tasks): clip differs only in γ
    clip = DEFR(DEFRConfig(spec, ["a", "b"], head="clip", logit_scale=4.61))
    with torch.no_grad():
        clip.classifier.mul_(torch.tensor([[3.0], [0.2]]))  # rows of different norms must not matter
    expected = math.exp(4.61) * torch.nn.functional.cosine_similarity(feats[:, None], clip.classifier[None], dim=-1)
    torch.testing.assert_close(clip.classify(feats), expected, rtol=1e-4, atol=1e-4)


def test_conv_stem_makes_one_token_per_16_pixel_patch():
    from defr.model.vit import VisionTransformer, ViTConfig

    vit = VisionTransformer(ViTConfig(image_size=64, patch_size=16, width=32, layers=1, heads=2, stem="conv")).eval()
    assert vit.embed(torch.randn(2, 3, 64, 64)).shape == (2, 1 + 16, 32)
    with pytest.raises(ValueError, match="16-pixel"):
        ViTConfig(image_size=64, patch_size=8, stem="conv")
    with pytest.raises(ValueError, match="stem"):
        ViTConfig(stem="resnet")


def test_a_cls_that_reads_only_the_last_block_sees_no_image_before_it():
    """cls_reads="last_block" (tiny-vit): after every block but the last the CLS token is the same for any
    image; the last block reads the image, so the logits differ. "every_block" (CLIP) reads from the first."""
    from defr.model.vit import VisionTransformer, ViTConfig

    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    common = dict(image_size=64, patch_size=16, width=32, layers=3, heads=2)
    late = VisionTransformer(ViTConfig(**common, cls_reads="last_block")).eval()
    every = VisionTransformer(ViTConfig(**common)).eval()
    every.load_state_dict(late.state_dict())
    with torch.no_grad():
        cls_late, cls_every = late.tokens(images, num_blocks=2)[:, 0], every.tokens(images, num_blocks=2)[:, 0]
        assert torch.equal(cls_late[0], cls_late[1]) and not torch.allclose(cls_every[0], cls_every[1])
        out = late(images)
        assert not torch.allclose(out[0], out[1])
    with pytest.raises(ValueError, match="cls_reads"):
        ViTConfig(cls_reads="never")


def test_tiny_vit_cls_reads_the_last_block_and_old_checkpoints_keep_every_block(tiny_model):
    from defr.model.backbones import BackboneSpec

    assert tiny_model.cfg.backbone.vit.cls_reads == "last_block"
    old = tiny_model.cfg.backbone.to_dict()
    del old["vit"]["cls_reads"]  # a checkpoint written before the option existed
    assert BackboneSpec.from_dict(old).vit.cls_reads == "every_block"
    with pytest.raises(ValueError, match="mask-n"):
        tiny_model.forward_pairs_dense(
            torch.randn(1, 3, 64, 64), torch.tensor([[0.0, 0, 32, 32]]), torch.tensor([[32.0, 32, 64, 64]]),
            torch.tensor([0]), masked_layers=2,
        )  # fmt: skip


# --------------------------------------------------------------------------- checkpoint headers (issue 18: 14, 15, 19)


def _tampered_checkpoint(model, path, edit) -> None:
    """``model``'s weights under a header whose config ``edit(config dict)`` changed (or whose config
    text ``edit`` returns, when it returns a str)."""
    import json

    from safetensors.torch import save_file

    from defr.model.checkpoint import CHECKPOINT_FORMAT

    config = model.cfg.to_dict()
    text = edit(config)
    header = {"format": CHECKPOINT_FORMAT, "config": text if isinstance(text, str) else json.dumps(config)}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=header)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c["backbone"]["vit"].update(image_size=65536), r"ViTConfig\.image_size must be in \[1, 8192\]"),
        (lambda c: c["backbone"].update(image_size=65536), r"BackboneSpec\.image_size must be in \[1, 8192\]"),
        (lambda c: c["backbone"]["vit"].update(layers=100000), r"ViTConfig\.layers must be in \[1, 512\], got 100000"),
        (lambda c: c["backbone"]["vit"].update(patch_size=0), r"ViTConfig\.patch_size must be in \[1, 1024\], got 0"),
        (lambda c: c["backbone"]["vit"].update(width=-192), r"ViTConfig\.width must be in \[1, 16384\], got -192"),
        (lambda c: c["backbone"].update(std=[0.0, 0.3, 0.3]), r"BackboneSpec\.std must be > 0"),
        (lambda c: '{"backbone": ' + "9" * 400 + "}", "does not fit in 64 bits"),
        (lambda c: "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (lambda c: c["backbone"]["vit"].update(layers=200), r"does not match its config: missing"),
        (lambda c: c["backbone"]["vit"].update(image_size=4096), r"does not match its config: wrong shapes"),
        (lambda c: c["backbone"].update(feature_dim=1 << 24), r"does not match its config: wrong shapes"),
    ],
)
def test_checkpoint_header_is_checked_before_the_model_is_built(tiny_model, tmp_path, monkeypatch, edit, match):
    from defr.model import checkpoint

    path = tmp_path / "tampered.safetensors"
    _tampered_checkpoint(tiny_model, path, edit)
    built_on = []
    real = checkpoint.DEFR

    def spy(cfg):
        built_on.append(torch.empty(()).device.type)
        return real(cfg)

    monkeypatch.setattr(checkpoint, "DEFR", spy)
    with pytest.raises(CheckpointError, match=rf"tampered\.safetensors: .*{match}"):
        load_checkpoint(path)
    assert built_on in ([], ["meta"])  # never built for real: no memory spent on the header's sizes
