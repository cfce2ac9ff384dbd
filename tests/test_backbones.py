"""Backbones (open_clip and timm ViTs renamed into ours, timm ResNets), weights loading, the model factory.

Each test asks for the packages it needs (the ``open_clip`` and ``timm`` fixtures, or ``importorskip`` for a
parametrised name): without open_clip, the tiny-vit, timm and factory tests still run."""

from __future__ import annotations

import math
import time
import zlib

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from defr.errors import ConfigError
from defr.model import DEFR, DEFRConfig, VisionTransformer
from defr.model import text as text_module
from defr.model.backbones import UnsupportedBackboneError, backbone_spec, build_backbone
from defr.model.factory import build_model, clip_head_weights, language_classifier
from defr.model.pretrained import hub_reachable, load_pretrained, load_state_strict, vit_state
from defr.model.vit import resize_positional_embedding


@pytest.fixture(scope="module")
def open_clip():
    return pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def timm():
    return pytest.importorskip("timm")


def _needs_package_of(name: str) -> None:
    """Skip unless the package that defines backbone ``name`` is installed (timm/… or an open_clip name)."""
    pytest.importorskip("timm" if name.startswith("timm/") else "open_clip")


@pytest.fixture(scope="module")
def clip_model(open_clip):
    """A random-init open_clip ViT-B-32 (the only open_clip model built in this module), eval mode."""
    torch.manual_seed(0)
    return open_clip.create_model("ViT-B-32", pretrained=None).eval()


@pytest.fixture(scope="module")
def clip_file(clip_model, tmp_path_factory):
    """Its full-model state dict as a safetensors file (the layout of open_clip's hub weights)."""
    path = tmp_path_factory.mktemp("clip") / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in clip_model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def clip_backbone(clip_file):
    spec = backbone_spec("ViT-B-32", 224)
    net = build_backbone(spec).eval()
    extras = load_pretrained(net, spec, str(clip_file))
    return spec, net, extras


# --- open_clip ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_open_clip_vit_matches_encode_image(clip_model, clip_backbone):
    spec, net, extras = clip_backbone
    assert isinstance(net, VisionTransformer)
    assert extras["visual_proj"].shape == (768, 512)
    torch.testing.assert_close(extras["visual_proj"], clip_model.visual.proj.detach())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours = net(x) @ extras["visual_proj"]
        theirs = clip_model.encode_image(x)
    assert (ours - theirs).abs().max() < 1e-4
    assert theirs.abs().max() > 1e-2  # not trivially zero


@pytest.mark.slow
def test_visual_only_and_prefixed_state_dicts_convert_the_same(clip_model, clip_backbone):
    spec, net, _ = clip_backbone
    visual = clip_model.visual.state_dict()
    layouts = [
        visual,  # open_clip visual tower alone
        {f"module.visual.{k}": v for k, v in visual.items()},  # DDP-wrapped full model
        {f"visual_encoder.visual.{k}": v for k, v in visual.items()},  # released DEFR layout
    ]
    x = torch.randn(1, 3, 224, 224)
    other = build_backbone(spec).eval()
    for state in layouts:
        converted, extras = vit_state(state, spec)
        torch.testing.assert_close(extras["visual_proj"], visual["proj"])
        with torch.no_grad():
            for param in other.parameters():
                param.zero_()
        load_state_strict(other, converted, "test")
        with torch.no_grad():
            torch.testing.assert_close(other(x), net(x))


@pytest.mark.slow
def test_official_head_is_clip_zero_shot_over_projected_row_norms(open_clip, clip_model, clip_backbone):
    spec, net, extras = clip_backbone
    prompts = ["a person riding a bicycle", "a person holding an umbrella", "a person and a dog", "a cat"]
    with torch.no_grad():
        text = F.normalize(clip_model.encode_text(open_clip.get_tokenizer("ViT-B-32")(prompts)), dim=-1)
    p = extras["visual_proj"]
    model = DEFR(DEFRConfig(spec, prompts, head="clip", logit_scale=4.61), backbone=net).eval()
    with torch.no_grad():
        model.classifier.copy_(clip_head_weights(text, p))
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        z = math.exp(4.61) * F.normalize(clip_model.encode_image(x), dim=-1) @ text.t()
        f = net(x)
        logits = model(x)
    # γ·cos(f, P·t_c) = z_c · |fP| / (|f| · |P·t_c|): CLIP's zero-shot logit rescaled per image and per class
    factor = (f @ p).norm(dim=-1) / f.norm(dim=-1)
    rows = model.classifier.norm(dim=-1)
    torch.testing.assert_close(logits, factor[:, None] * z / rows[None, :], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_positional_embedding_interpolated_for_another_size(clip_model, clip_file):
    spec = backbone_spec("ViT-B-32", 320)
    assert spec.vit.grid_size == 10 and spec.extra["pretrain_image_size"] == 224
    net = build_backbone(spec).eval()
    load_pretrained(net, spec, str(clip_file))
    original = clip_model.visual.positional_embedding.detach()
    assert net.positional_embedding.shape == (101, 768)
    torch.testing.assert_close(net.positional_embedding.detach(), resize_positional_embedding(original, 10))
    torch.testing.assert_close(net.positional_embedding[0].detach(), original[0])
    with torch.no_grad():
        out = net(torch.randn(2, 3, 320, 320))
    assert out.shape == (2, 768) and torch.isfinite(out).all()


def test_open_clip_specs_read_the_model_config(open_clip):
    b16 = backbone_spec("ViT-B-16", 672)
    assert (b16.vit.width, b16.vit.layers, b16.vit.heads, b16.vit.patch_size) == (768, 12, 12, 16)
    assert b16.vit.grid_size == 42 and b16.vit.act == "gelu" and not b16.vit.patch_bias and b16.vit.ln_pre
    assert b16.mean == (0.48145466, 0.4578275, 0.40821073) and b16.extra["embed_dim"] == 512
    l14 = backbone_spec("ViT-L-14", 224)
    assert (l14.vit.width, l14.vit.layers, l14.vit.heads, l14.vit.patch_size) == (1024, 24, 16, 14)
    # QuickGELU is a property of OpenAI's weights: the -quickgelu name or the openai tag
    assert backbone_spec("ViT-B-16-quickgelu", 224).vit.act == "quick_gelu"
    assert backbone_spec("ViT-B-16", 224, pretrained="openai").vit.act == "quick_gelu"
    assert backbone_spec("ViT-B-16", 224, pretrained="laion2b_s34b_b88k").vit.act == "gelu"
    spec = backbone_spec("ViT-B-16", 448, pretrained="openai")
    assert type(spec).from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("ViT-M-16-alt", "ls_init_value"),
        ("ViT-L-14-CLIPA", "pool_type"),
        ("coca_ViT-B-32", "attentional_pool"),
        ("RN50", "ResNet"),
        ("ViT-B-16-SigLIP", "timm vision tower"),
        ("timm/vit_base_patch14_reg4_dinov2", "register tokens"),
        ("timm/vit_small_patch14_dinov2", "layer scale"),
        ("timm/vit_medium_patch16_gap_256", "no class token"),
        ("timm/vit_base_patch16_siglip_224", "'map' pooling"),
        ("timm/deit_base_distilled_patch16_224", "VisionTransformerDistilled"),
    ],
)
def test_unsupported_architectures_are_clear_errors(name, match):
    _needs_package_of(name)
    with pytest.raises(UnsupportedBackboneError, match=match):
        backbone_spec(name, 224)


def test_unknown_names(timm):
    with pytest.raises(ConfigError, match="unknown timm model 'not_a_model'"):
        backbone_spec("timm/not_a_model", 224)
    with pytest.raises(ConfigError, match="unknown backbone 'ViT-Q-99'"):
        backbone_spec("ViT-Q-99", 224)


# --- tags, offline, bad files ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "tag"), [("ViT-B-32", "openai"), ("timm/vit_tiny_patch16_224", "timm")])
def test_offline_tag_fails_fast_with_a_clear_error(monkeypatch, name, tag):
    _needs_package_of(name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub_reachable()
    spec = backbone_spec(name, 224, pretrained=tag)
    net = build_backbone(spec)
    start = time.monotonic()
    with pytest.raises(ConfigError, match="could not fetch pretrained weights.*pass the local file") as e:
        load_pretrained(net, spec, tag)
    assert time.monotonic() - start < 10
    assert "\n" not in str(e.value)


def test_unreachable_hub_without_offline_flag_fails_fast(monkeypatch, timm):
    import defr.model.pretrained as pretrained

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(pretrained.socket, "create_connection", no_network)
    spec = backbone_spec("timm/vit_tiny_patch16_224", 224)
    with pytest.raises(ConfigError, match="huggingface.co unreachable and not in the cache"):
        load_pretrained(build_backbone(spec), spec, "timm")


@pytest.mark.slow
def test_tag_errors(clip_backbone):
    spec, net, _ = clip_backbone
    with pytest.raises(ConfigError, match="no pretrained tag 'nope'.*openai"):
        load_pretrained(net, spec, "nope")
    # the spec was built without the tag: GELU, but OpenAI's weights need QuickGELU
    with pytest.raises(ConfigError, match="trained with QuickGELU"):
        load_pretrained(net, spec, "openai")
    with pytest.raises(ConfigError, match="no such weights file"):
        load_pretrained(net, spec, "/nonexistent/weights.safetensors")
    tiny = backbone_spec("tiny-vit", 64)
    with pytest.raises(ConfigError, match="'tiny-vit' has no packaged weights 'openai'.*defr-synth"):
        load_pretrained(build_backbone(tiny), tiny, "openai")


@pytest.mark.slow
def test_mismatched_weights_list_missing_and_unexpected_keys(clip_model, clip_backbone, tmp_path):
    spec, net, _ = clip_backbone  # errors are raised before anything is loaded: the shared backbone stays intact
    state = {k: v.contiguous() for k, v in clip_model.visual.state_dict().items()}
    del state["transformer.resblocks.3.ln_1.weight"]
    state["extra.weight"] = torch.zeros(3)
    state["ln_post.bias"] = torch.zeros(5)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ConfigError, match=r"missing 1 \[transformer.resblocks.\*.ln_1.weight\]") as e:
        load_pretrained(net, spec, str(tmp_path / "bad.safetensors"))
    assert "unexpected 1 [extra.weight]" in str(e.value) and "ln_post.bias (5,) vs (768,)" in str(e.value)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="junk.pt: cannot read weights"):
        load_pretrained(net, spec, str(tmp_path / "junk.pt"))


# --- timm --------------------------------------------------------------------------------------------------------


def test_timm_vit_matches_forward_features(tmp_path, timm):
    torch.manual_seed(1)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    torch.save(ref.state_dict(), tmp_path / "vit.pth")  # includes the ImageNet head, which is dropped
    spec = backbone_spec("timm/vit_tiny_patch16_224", 224)
    assert spec.vit.patch_bias and not spec.vit.ln_pre and spec.vit.norm_eps == 1e-6 and spec.timm_name is None
    net = build_backbone(spec).eval()
    assert load_pretrained(net, spec, str(tmp_path / "vit.pth")) == {}
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        theirs = ref.forward_features(x)[:, 0]
        assert (net(x) - theirs).abs().max() < 1e-4
    # the same weights at 320 px: interpolated positional embedding, a running model
    big = backbone_spec("timm/vit_tiny_patch16_224", 320)
    net = build_backbone(big).eval()
    load_pretrained(net, big, str(tmp_path / "vit.pth"))
    assert net.positional_embedding.shape == (401, 192)
    with torch.no_grad():
        assert net(torch.randn(1, 3, 320, 320)).shape == (1, 192)


def test_timm_resnet_stays_a_timm_module(tmp_path, timm):
    spec = backbone_spec("timm/resnet18", 96)
    assert spec.vit is None and spec.timm_name == "resnet18" and spec.feature_dim == 512
    assert spec.mean == (0.485, 0.456, 0.406)
    torch.manual_seed(2)
    ref = timm.create_model("resnet18", pretrained=False).eval()
    save_file(ref.state_dict(), str(tmp_path / "r18.safetensors"))  # with the fc classifier, which is dropped
    net = build_backbone(spec).eval()
    load_pretrained(net, spec, str(tmp_path / "r18.safetensors"))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        feats = net(x)
        torch.testing.assert_close(feats, ref.forward_head(ref.forward_features(x), pre_logits=True))
    assert feats.shape == (2, 512)
    model = DEFR(DEFRConfig(spec, ["a", "b", "c"]), backbone=net).eval()
    assert model(x).shape == (2, 3)
    with pytest.raises(TypeError, match="not a ViT"):
        model.forward_pairs(x, torch.zeros(1, 4), torch.zeros(1, 4), torch.zeros(1, dtype=torch.long))


# --- the factory ---------------------------------------------------------------------------------------------------


class FakeEncoder:
    """Deterministic pseudo-random unit vectors per sentence, or a wrapped embedding function."""

    def __init__(self, dim: int, name: str = "fake", fn=None):
        self.dim, self.name, self.fn = dim, name, fn

    def encode(self, texts: list[str]) -> torch.Tensor:
        if self.fn is not None:
            return F.normalize(self.fn(texts), dim=-1)
        rows = [torch.randn(self.dim, generator=torch.Generator().manual_seed(zlib.crc32(t.encode()))) for t in texts]
        return F.normalize(torch.stack(rows), dim=-1)


NAMES = ["ride bicycle", "hold umbrella", "no_interaction dog"]


def test_build_model_random():
    torch.manual_seed(0)
    model = build_model("tiny-vit", NAMES, image_size=64, init="random", text_encoder=None)
    assert model.cfg.head == "cosine" and model.classifier.shape == (3, 192)
    assert 0.01 < model.classifier.std().item() < 0.04
    assert model.cfg.init["init"] == "random" and model.cfg.init["pretrained"] is None
    assert set(model.cfg.init) == {"init", "text_encoder", "templates", "pretrained", "head_rule"}
    with pytest.raises(ValueError, match="init must be one of"):
        build_model("tiny-vit", NAMES, image_size=64, init="zeros")


def test_build_model_language_same_dim():
    enc = FakeEncoder(192)
    model = build_model("tiny-vit", NAMES, image_size=64, templates=("{}", "a photo of {}"), encoder=enc)
    expected = text_module.class_embeddings(enc, text_module.class_prompts(NAMES, ("{}", "a photo of {}")))
    assert model.cfg.head == "cosine"
    torch.testing.assert_close(model.classifier.detach(), expected.float())
    assert model.cfg.init["text_encoder"] == "fake" and model.cfg.init["templates"] == ["{}", "a photo of {}"]
    assert "W = T" in model.cfg.init["head_rule"]


def test_build_model_language_projects_other_dims():
    enc = FakeEncoder(40)
    model = build_model("tiny-vit", NAMES, image_size=64, encoder=enc)
    emb = text_module.class_embeddings(enc, text_module.class_prompts(NAMES, ("{}",)))
    assert model.cfg.head == "cosine" and model.classifier.shape == (3, 192)
    torch.testing.assert_close(model.classifier.detach(), text_module.project_embeddings(emb, 192).float())
    assert "project_embeddings" in model.cfg.init["head_rule"]
    with pytest.raises(ValueError, match="needs a text encoder"):
        build_model("tiny-vit", NAMES, image_size=64, text_encoder=None)


@pytest.mark.slow
def test_build_model_clip_head_rule(open_clip, clip_model, clip_file):
    tokenizer = open_clip.get_tokenizer("ViT-B-32")

    def encode_text(texts):
        with torch.no_grad():
            return clip_model.encode_text(tokenizer(texts))

    clip_enc = FakeEncoder(512, name="clip:ViT-B-32", fn=encode_text)
    model = build_model("ViT-B-32", NAMES, image_size=224, pretrained=str(clip_file), encoder=clip_enc).eval()
    assert model.cfg.head == "clip" and model.cfg.logit_scale == pytest.approx(4.61)
    assert model.cfg.init["pretrained"] == str(clip_file) and model.cfg.init["head_rule"].startswith("clip")
    text = text_module.class_embeddings(clip_enc, text_module.class_prompts(NAMES, ("{}",)))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        z = math.exp(4.61) * F.normalize(clip_model.encode_image(x), dim=-1) @ text.t()
        logits = model(x)
        f = model.backbone(x)
    factor = (f @ clip_model.visual.proj).norm(dim=-1) / f.norm(dim=-1)
    rows = model.classifier.norm(dim=-1)
    torch.testing.assert_close(logits, factor[:, None] * z / rows[None, :], rtol=1e-4, atol=1e-4)
    # a 512-d encoder that is not CLIP's, CLIP text with no visual projection, or other dims: the cosine head
    proj = clip_model.visual.proj.detach()
    for enc, p in [(FakeEncoder(512), proj), (clip_enc, None), (FakeEncoder(384, name="clip:other"), proj)]:
        weights, head, scale, rule, _ = language_classifier(NAMES, 768, p, None, ("{}",), enc)
        assert head == "cosine" and scale is None and weights.shape == (3, 768) and rule.startswith("cosine")


def test_clip_head_weights_shapes():
    t, p = torch.randn(5, 8), torch.randn(16, 8)
    torch.testing.assert_close(clip_head_weights(t, p), t @ p.t())
    with pytest.raises(ValueError, match="do not match"):
        clip_head_weights(torch.randn(5, 7), p)


def test_timm_model_checkpoint_round_trip(tmp_path, timm):
    from defr.model import load_checkpoint, save_checkpoint

    model = build_model("timm/vit_tiny_patch16_224", NAMES, image_size=64, init="random", text_encoder=None).eval()
    save_checkpoint(model, tmp_path / "m.safetensors")
    again = load_checkpoint(tmp_path / "m.safetensors")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    assert again.cfg.backbone == model.cfg.backbone
