"""Acceptance tests of the mask-1 pair path: ``DEFR.forward_pairs`` against the dense reference."""

from __future__ import annotations

import math

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from defr.model import DEFR, DEFRConfig, ViTConfig, backbone_spec, pair_masks
from defr.model.backbones import CLIP_MEAN, CLIP_STD, BackboneSpec
from defr.model.pair_attention import cls_attention_bias, pair_cls_features_standard_ops

TOL = 1e-4


def _model(spec: BackboneSpec, classes: int = 24, seed: int = 0) -> DEFR:
    torch.manual_seed(seed)
    return DEFR(DEFRConfig(spec, [f"verb{i} object{i}" for i in range(classes)])).eval()


def _many_heads_spec() -> BackboneSpec:
    vit = ViTConfig(image_size=48, patch_size=8, width=64, layers=3, heads=8, act="quick_gelu")
    return BackboneSpec("random-vit", 48, CLIP_MEAN, CLIP_STD, vit=vit, feature_dim=64)


MODELS = {
    "tiny-64": lambda: _model(backbone_spec("tiny-vit", 64)),
    "tiny-96": lambda: _model(backbone_spec("tiny-vit", 96), seed=1),
    "vit-8-heads": lambda: _model(_many_heads_spec(), seed=2),
}


def _random_boxes(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """[n, 4] valid boxes, partly outside the image (negative coords, beyond the border)."""
    xy = torch.rand(n, 2, generator=gen) * size * 1.2 - 0.1 * size
    wh = torch.rand(n, 2, generator=gen) * size * 0.7
    return torch.cat([xy, xy + wh], dim=1)


def _edge_boxes(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(human, object) pairs of edge cases, in pixels of the S×S input."""
    s = float(size)
    pairs = [
        ([8.0, 8.0, 8.0, 8.0], [16.0, 16.0, 16.0, 16.0]),  # both zero-size on patch borders: CLS sees itself only
        ([5.0, 7.0, 5.0, 7.0], [0.0, 0.0, s, s]),  # zero-size inside a patch; full image
        ([-50.0, -40.0, -10.0, -5.0], [s + 5, s + 5, s + 40, s + 60]),  # both fully outside
        ([0.0, 0.0, s, s], [0.0, 0.0, s, s]),  # full image twice
        ([3.0, 4.0, 20.0, 30.0], [3.0, 4.0, 20.0, 30.0]),  # identical human and object boxes
        ([-10.0, -10.0, 12.0, 9.0], [s - 9, s - 20, s + 30, s + 30]),  # negative coords, beyond the border
        ([0.0, 0.0, 0.5, 0.5], [s - 0.5, s - 0.5, s, s]),  # sub-pixel boxes in the corners
    ]
    h, o = zip(*pairs, strict=True)
    return torch.tensor(h), torch.tensor(o)


def _compare(model: DEFR, images, boxes_h, boxes_o, pair_index, mask_mode: str = "hard") -> float:
    """max |Δ| of every fast pair path (the op with attention auto / reference, and the standard-op
    path of ONNX graphs) against the dense reference."""
    with torch.no_grad():
        dense = model.forward_pairs_dense(images, boxes_h, boxes_o, pair_index, masked_layers=1, mask_mode=mask_mode)
        fast = [
            model.forward_pairs(images, boxes_h, boxes_o, pair_index, mask_mode=mask_mode, attention=attention)
            for attention in ("auto", "reference")
        ]
        fast.append(_standard_ops(model, images, boxes_h, boxes_o, pair_index, mask_mode))
    for f in fast:
        assert f.shape == dense.shape == (boxes_h.shape[0], model.cfg.num_classes)
        assert torch.isfinite(f).all()
    return max((f - dense).abs().max().item() for f in fast)


def _standard_ops(model: DEFR, images, boxes_h, boxes_o, pair_index, mask_mode: str) -> torch.Tensor:
    vit = model.vit
    tokens = vit.tokens(images, num_blocks=len(vit.blocks) - 1)
    bias = cls_attention_bias(pair_masks(boxes_h, boxes_o, vit.cfg.image_size, vit.cfg.patch_size), mask_mode)
    return model.classify(vit.ln_post(pair_cls_features_standard_ops(vit.blocks[-1], tokens, bias, pair_index)))


@pytest.mark.parametrize("mask_mode", ["hard", "released"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_fast_matches_dense_random_boxes_multi_image(name, mask_mode):
    model = MODELS[name]()
    s = model.cfg.image_size
    gen = torch.Generator().manual_seed(7)
    counts = [5, 0, 9, 1]  # an image with no pair in the middle
    images = torch.randn(len(counts), 3, s, s, generator=gen)
    pair_index = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    p = int(pair_index.numel())
    boxes_h, boxes_o = _random_boxes(p, s, gen), _random_boxes(p, s, gen)
    assert _compare(model, images, boxes_h, boxes_o, pair_index, mask_mode) <= TOL


@pytest.mark.parametrize("mask_mode", ["hard", "released"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_fast_matches_dense_edge_boxes(name, mask_mode):
    model = MODELS[name]()
    s = model.cfg.image_size
    boxes_h, boxes_o = _edge_boxes(s)
    images = torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(3))
    pair_index = torch.tensor([0, 1, 0, 1, 1, 0, 1])
    assert _compare(model, images, boxes_h, boxes_o, pair_index, mask_mode) <= TOL


def test_cls_only_pair_differs_from_full_image_pair():
    """The mask is applied: a pair that sees nothing but CLS differs from one that sees every patch."""
    model = MODELS["tiny-64"]()
    boxes_h, boxes_o = _edge_boxes(64)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        logits = model.forward_pairs(images, boxes_h[[0, 3]], boxes_o[[0, 3]], torch.zeros(2, dtype=torch.long))
    assert (logits[0] - logits[1]).abs().max() > 1e-3


def test_image_logits_equal_unmasked_forward():
    model = MODELS["vit-8-heads"]()
    images = torch.randn(3, 3, 48, 48)
    boxes_h, boxes_o = _edge_boxes(48)
    pair_index = torch.tensor([2, 2, 0, 2, 0, 0, 2])  # image 1 has no pair
    with torch.no_grad():
        pairs, image = model.forward_pairs(images, boxes_h, boxes_o, pair_index, with_image_logits=True)
        full = model(images)
        one = model.forward_pairs(images, boxes_h, boxes_o, pair_index)
    assert image.shape == full.shape == (3, model.cfg.num_classes)
    assert (image - full).abs().max() <= TOL
    assert (pairs - one).abs().max() <= TOL
    # A pair whose boxes cover the whole image is the unmasked CLS.
    assert (pairs[3] - full[2]).abs().max() <= TOL


@pytest.mark.parametrize("name", sorted(MODELS))
def test_zero_pairs(name):
    model = MODELS[name]()
    s = model.cfg.image_size
    images = torch.randn(2, 3, s, s)
    empty = torch.zeros(0, 4)
    index = torch.zeros(0, dtype=torch.long)
    with torch.no_grad():
        pairs, image = model.forward_pairs(images, empty, empty, index, with_image_logits=True)
        only = model.forward_pairs(images, empty, empty, index)
        full = model(images)
    assert pairs.shape == only.shape == (0, model.cfg.num_classes)
    assert (image - full).abs().max() <= TOL


@pytest.mark.parametrize("mask_mode", ["hard", "released"])
def test_image_logits_are_unmasked_in_every_mode(mask_mode):
    model = MODELS["tiny-64"]()
    images = torch.randn(2, 3, 64, 64)
    boxes_h, boxes_o = _edge_boxes(64)
    with torch.no_grad():
        _, image = model.forward_pairs(
            images, boxes_h, boxes_o, torch.zeros(7, dtype=torch.long), with_image_logits=True, mask_mode=mask_mode
        )
        full = model(images)
    assert (image - full).abs().max() <= TOL


def test_unknown_mask_mode_is_refused():
    model = MODELS["tiny-64"]()
    args = (torch.randn(1, 3, 64, 64), torch.zeros(1, 4), torch.zeros(1, 4), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="mask_mode must be one of"):
        model.forward_pairs(*args, mask_mode="soft")
    with pytest.raises(ValueError, match="mask_mode must be one of"):
        model.forward_pairs_dense(*args, mask_mode="soft")
    with pytest.raises(ValueError, match="backend must be one of"):
        model.forward_pairs(*args, attention="cuda")


def test_mask_2_differs_from_mask_1():
    model = MODELS["vit-8-heads"]()  # mask-n needs a CLS token that reads every block (tiny-vit's reads the last)
    gen = torch.Generator().manual_seed(11)
    images = torch.randn(2, 3, 48, 48, generator=gen)
    boxes_h, boxes_o = _random_boxes(6, 48, gen), _random_boxes(6, 48, gen)
    index = torch.tensor([0, 0, 0, 1, 1, 1])
    with torch.no_grad():
        m1 = model.forward_pairs_dense(images, boxes_h, boxes_o, index, masked_layers=1)
        m2 = model.forward_pairs_dense(images, boxes_h, boxes_o, index, masked_layers=2)
    assert (m1 - m2).abs().max() > 1e-3
    with pytest.raises(ValueError, match="masked_layers"):
        model.forward_pairs_dense(images, boxes_h, boxes_o, index, masked_layers=5)


def _literal_mask(box_h, box_o, image_size: int, patch_size: int) -> list[bool]:
    """The DESIGN §3 rule written out per patch with Python floats."""
    g = image_size // patch_size

    def ranges(box):
        x1, y1, x2, y2 = (float(v) * g / image_size for v in box)
        clamp = lambda v: min(max(v, 0), g)  # noqa: E731
        return clamp(math.floor(x1)), clamp(math.floor(y1)), clamp(math.ceil(x2)), clamp(math.ceil(y2))

    out = []
    for r in range(g):
        for c in range(g):
            seen = False
            for box in (box_h, box_o):
                c0, r0, c1, r1 = ranges(box)
                seen |= r0 <= r < r1 and c0 <= c < c1
            out.append(seen)
    return out


@pytest.mark.parametrize("image_size,patch_size", [(64, 16), (96, 16), (48, 8), (70, 7)])
def test_pair_masks_match_literal_rule(image_size, patch_size):
    gen = torch.Generator().manual_seed(image_size)
    boxes_h, boxes_o = _random_boxes(40, image_size, gen), _random_boxes(40, image_size, gen)
    eh, eo = _edge_boxes(image_size)
    boxes_h, boxes_o = torch.cat([boxes_h, eh]), torch.cat([boxes_o, eo])
    masks = pair_masks(boxes_h, boxes_o, image_size, patch_size)
    g = image_size // patch_size
    assert masks.shape == (boxes_h.shape[0], g * g) and masks.dtype == torch.bool
    for i in range(boxes_h.shape[0]):
        assert masks[i].tolist() == _literal_mask(boxes_h[i].tolist(), boxes_o[i].tolist(), image_size, patch_size)
    # Spot checks: full image sees every patch; an outside pair sees none.
    assert masks[-4].all() and not masks[-5].any()


def _largest_allocation(fn) -> int:
    """Bytes of the largest allocation any op makes while ``fn`` runs (torch.profiler memory events)."""
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max(max(e.cpu_memory_usage, e.self_cpu_memory_usage) for e in prof.events())


def test_fast_path_memory_is_linear_in_pairs():
    """No P×L×L tensor: the largest allocation stays far below P·L² floats and grows at most linearly in P.

    At small P the backbone's own activations dominate; from 256 pairs on the pair path's largest
    tensors are O(P·D) (the MLP hidden layer), while the dense reference builds [P, 1, L, L].
    """
    model = _model(backbone_spec("tiny-vit", 160), classes=8)  # L = 1 + 10·10 = 101
    s, length = 160, 101
    images = torch.randn(1, 3, s, s)
    gen = torch.Generator().manual_seed(0)
    sizes = {}
    for p in (16, 256, 1024):
        bh, bo = _random_boxes(p, s, gen), _random_boxes(p, s, gen)
        index = torch.zeros(p, dtype=torch.long)
        sizes[p] = _largest_allocation(lambda bh=bh, bo=bo, index=index: model.forward_pairs(images, bh, bo, index))
        if p == 16:
            dense = _largest_allocation(
                lambda bh=bh, bo=bo, index=index: model.forward_pairs_dense(images, bh, bo, index)
            )
            assert dense >= p * length * length * 4  # the check can fail: the reference does build [P, 1, L, L]
        else:
            assert sizes[p] < p * length * length * 4 / 8, (p, sizes[p])
    assert sizes[1024] <= 4 * sizes[256] * 1.05  # 4× the pairs, at most 4× the largest tensor
