"""Building DEFR models: ``build_model`` for training (backbone, pretrained weights, classifier
initialisation) and ``create_model``, a cheap random model for tests, benchmarks and ``defr bench``.

Classifier rules (recorded in ``cfg.init["head_rule"]``):
- ``init="random"``: rows ~ N(0, 0.02²), head ``cosine``.
- ``init="language"`` with an open_clip CLIP backbone whose weights came with the visual projection
  P [D, E], and a ``clip:`` text encoder of dimension E: the released model's head, ``W = T·Pᵀ``,
  head ``clip``, logit scale exp(4.61) (DESIGN.md §3).
- ``init="language"`` with packaged weights pretrained against that text encoder (``defr pretrain``:
  ``tiny-vit --pretrained defr-synth`` with ``minilm``): ``W = T·Pᵀ`` with their projection, head ``cosine``.
- ``init="language"`` otherwise: ``W = project_embeddings(T, D)`` (identity when the text dimension
  equals the feature dimension D), head ``cosine``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import torch

from defr import vocab
from defr.errors import ConfigError
from defr.model.backbones import backbone_spec, build_backbone
from defr.model.defr import DEFR, DEFRConfig
from defr.model.pretrained import load_pretrained

if TYPE_CHECKING:
    from defr.model.text import TextEncoder

INITS = ("random", "language")
CLIP_LOGIT_SCALE = 4.61  # the released model's log logit scale: exp(4.61) ≈ 100.5


def clip_head_weights(text_emb: torch.Tensor, visual_proj: torch.Tensor) -> torch.Tensor:
    """The official head: CLIP's visual projection folded into the class proxies.

    text_emb: [C, E] normalised CLIP text embeddings; visual_proj: [D, E] → W: [C, D] = T·Pᵀ.
    """
    if text_emb.shape[1] != visual_proj.shape[1]:
        raise ConfigError(
            f"text embeddings of dim {text_emb.shape[1]} do not match the visual projection's output dim "
            f"{visual_proj.shape[1]}"
        )
    return text_emb.float() @ visual_proj.float().t()


def build_model(
    backbone: str,
    class_names: list[str],
    image_size: int = 672,
    pretrained: str | None = None,
    init: str = "language",
    text_encoder: str | None = "minilm",
    templates: tuple[str, ...] = ("{}",),
    encoder: TextEncoder | None = None,
    logit_scale: float | None = None,
) -> DEFR:
    """A DEFR model over ``class_names`` with backbone ``backbone`` at ``image_size`` px.

    ``pretrained``: a weights tag or local file for the backbone (None: random init).
    ``encoder`` overrides ``text_encoder`` with an already loaded text encoder; its ``name``
    attribute (``clip:<model>`` for CLIP's text tower) names it in ``cfg.init`` and for the head rule.
    ``logit_scale``: γ of the logits (None: the head rule's, 100 or exp(4.61)); fixed, not trained.
    """
    if init not in INITS:
        raise ConfigError(f"init must be one of {INITS}, not {init!r}")
    if not class_names:
        raise ConfigError("class_names is empty")
    spec = backbone_spec(backbone, image_size, pretrained=pretrained)
    net = build_backbone(spec)
    extras = load_pretrained(net, spec, pretrained) if pretrained else {}
    record = {"init": init, "text_encoder": None, "templates": None, "pretrained": pretrained}
    gamma = {"logit_scale": math.log(logit_scale)} if logit_scale is not None else {}
    if init == "random":
        rule = "random N(0, 0.02²), cosine head"
        return DEFR(DEFRConfig(spec, list(class_names), init={**record, "head_rule": rule}, **gamma), backbone=net)
    weights, head, scale, rule, name = language_classifier(
        class_names,
        spec.feature_dim,
        extras.get("visual_proj"),
        text_encoder,
        templates,
        encoder,
        aligned_text_encoder=extras.get("aligned_text_encoder"),
    )
    record.update(text_encoder=name, templates=list(templates), head_rule=rule)
    kwargs = {"logit_scale": scale} if scale is not None else {}
    kwargs.update(gamma)
    model = DEFR(DEFRConfig(spec, list(class_names), head=head, init=record, **kwargs), backbone=net)
    with torch.no_grad():
        model.classifier.copy_(weights)
    return model


def zero_shot_model(
    backbone: str, pretrained: str, text_encoder: str, class_names: list[str], image_size: int | None = None
) -> DEFR:
    """Language-aligned pretrained weights with the classes' text embeddings as the classifier, untrained.

    image_size: None for the weights' own input size (the packaged weights' sidecar; else 224).
    Refuses weights whose projection was not trained against ``text_encoder``: without that alignment a
    "zero-shot" score is meaningless.
    """
    from defr.model.pretrained import BUILTIN_WEIGHTS, builtin_sidecar

    if image_size is None:
        packaged = (backbone, pretrained) in BUILTIN_WEIGHTS
        image_size = builtin_sidecar(backbone, pretrained)["image_size"] if packaged else 224
    model = build_model(backbone, class_names, image_size, pretrained, init="language", text_encoder=text_encoder)
    if not model.cfg.init["head_rule"].startswith(("aligned", "clip")):
        raise ConfigError(
            f"{backbone} --pretrained {pretrained} is not aligned with text encoder {text_encoder!r} "
            f"({model.cfg.init['head_rule']}): zero-shot needs weights pretrained against that encoder"
        )
    return model


def language_classifier(
    class_names: list[str],
    feature_dim: int,
    visual_proj: torch.Tensor | None,
    text_encoder: str | None,
    templates: tuple[str, ...],
    encoder: TextEncoder | None = None,
    aligned_text_encoder: str | None = None,
) -> tuple[torch.Tensor, str, float | None, str, str]:
    """Classifier rows from class-name embeddings: (W [C, D], head, logit scale or None, rule, encoder name).

    aligned_text_encoder: the text encoder that ``visual_proj`` was trained against (packaged weights,
    ``defr pretrain``); with that encoder the rows are ``T·Pᵀ``, the pretraining's own class scores.
    """
    from defr.model import text

    if encoder is None:
        if not text_encoder:
            raise ConfigError("init='language' needs a text encoder (text_encoder=None was given)")
        encoder, name = text.load_text_encoder(text_encoder), text_encoder
    else:
        name = encoder.name
    emb = text.class_embeddings(encoder, text.class_prompts(list(class_names), tuple(templates)))
    clip_text = str(name).startswith("clip:")
    if visual_proj is not None and clip_text and emb.shape[1] == visual_proj.shape[1]:
        rule = f"clip: W = T·Pᵀ with CLIP's visual projection P {tuple(visual_proj.shape)}, scale exp(4.61)"
        return clip_head_weights(emb, visual_proj), "clip", CLIP_LOGIT_SCALE, rule, name
    if visual_proj is not None and name == aligned_text_encoder and emb.shape[1] == visual_proj.shape[1]:
        rule = f"aligned: W = T·Pᵀ with the pretrained projection P {tuple(visual_proj.shape)} ({name}, as pretrained)"
        return clip_head_weights(emb, visual_proj), "cosine", None, rule, name
    if emb.shape[1] == feature_dim:
        rule = f"cosine: W = T (text dim {emb.shape[1]} = feature dim)"
    else:
        rule = f"cosine: W = project_embeddings(T, {feature_dim}) (text dim {emb.shape[1]} ≠ feature dim)"
    return text.project_embeddings(emb, feature_dim).float(), "cosine", None, rule, name


def create_model(
    backbone: str = "tiny-vit",
    image_size: int = 224,
    class_names: list[str] | None = None,
    seed: int | None = 0,
    **vit_overrides,
) -> DEFR:
    """A DEFR model with random weights (no download, no text encoder), eval mode.

    class_names: default HICO's 600 classes. seed: seeds the initialisation (None: torch's
    global generator as it is). vit_overrides: ``ViTConfig`` fields to change, e.g. ``stem="patch"``
    for the released checkpoint's layout on ``tiny-vit``.
    """
    spec = backbone_spec(backbone, image_size)
    if vit_overrides:
        if spec.vit is None:
            raise ConfigError(f"backbone {backbone!r} is not a ViT: cannot override {sorted(vit_overrides)}")
        spec = dataclasses.replace(spec, vit=dataclasses.replace(spec.vit, **vit_overrides))
    names = list(class_names) if class_names is not None else vocab.hico().class_names
    if seed is not None:
        torch.manual_seed(seed)
    return DEFR(DEFRConfig(spec, names)).eval()
