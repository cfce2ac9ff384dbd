"""Backbones by name: their architecture, offline (``BackboneSpec``, recorded in checkpoints).

Names:
- ``tiny-vit``: a small random-init ViT (16-pixel patches from a conv stem, width 192, 4 blocks, a CLS token
  that reads the image only in the last block) for tests and demos.
- open_clip ViTs by model name: ``ViT-B-32``, ``ViT-B-16``, ``ViT-L-14``, … (OpenAI CLIP naming).
  The architecture comes from open_clip's model config; QuickGELU is a property of the weights
  (``*-quickgelu`` names, or a pretrained tag such as ``openai`` whose weights were trained with it).
- timm models as ``timm/<name>`` (a pretrained tag may follow: ``timm/vit_base_patch16_224.augreg_in21k``):
  plain class-token ViTs (``timm/vit_base_patch16_224``) are converted; other architectures
  (``timm/resnet50``) stay timm modules giving the pooled feature.

Every ViT becomes a ``defr.model.vit.VisionTransformer``; ResNets stay timm modules and can
classify but not do pair attention. Pretrained weights: ``defr.model.pretrained``.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from defr.errors import ConfigError, DefrError
from defr.model.vit import VIT_LIMITS, VisionTransformer, ViTConfig
from defr.typecheck import check_field_types

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


class UnsupportedBackboneError(DefrError, ValueError, TypeError):
    """A known model whose architecture our ViT cannot represent (layer scale, register tokens, …)."""


SOURCES = ("builtin", "open_clip", "timm", "defr-official")
# ``extra`` keys of checkpoints written before these were typed fields.
_LEGACY_EXTRA_FIELDS = {
    "source": "source",
    "timm_model": "timm_model",
    "qkv_bias": "qkv_bias",
    "classifier": "timm_head",
}


@dataclass
class BackboneSpec:
    """Everything needed to rebuild a backbone's architecture without downloading anything.

    source: where the architecture comes from (``SOURCES``); it picks the weight loader.
    vit: set for ViTs (built as our ``VisionTransformer``); otherwise a timm module is built.
    timm_model: timm's model name for ``timm/…`` backbones (ViT or not); timm_head: the names of
    timm's classifier modules, dropped from its weights; qkv_bias: whether the pretrained qkv
    projection has a bias (timm ViTs without one load zeros). extra: informational only
    (pretraining input size, CLIP embedding dimension).
    """

    name: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    vit: ViTConfig | None = None
    feature_dim: int = 0
    source: str = "builtin"
    timm_model: str | None = None
    timm_head: tuple[str, ...] = ()
    qkv_bias: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.timm_head, list):
            self.timm_head = tuple(self.timm_head)
        check_field_types(self)
        if self.source not in SOURCES:
            raise ConfigError(f"backbone source must be one of {SOURCES}, not {self.source!r}")
        if self.vit is None and self.timm_model is None:
            raise ConfigError(f"backbone {self.name!r}: neither a ViT config nor a timm model to build")
        low, high = VIT_LIMITS["image_size"]
        if not low <= self.image_size <= high:
            raise ConfigError(f"BackboneSpec.image_size must be in [{low}, {high}], got {self.image_size}")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):
            raise ConfigError(f"BackboneSpec.mean and std must be finite, got mean {self.mean}, std {self.std}")
        if not all(v > 0 for v in self.std):
            raise ConfigError(f"BackboneSpec.std must be > 0 (images are divided by it), got {self.std}")

    @property
    def timm_name(self) -> str | None:
        """The timm model built as a timm module (non-ViT timm backbones), else None."""
        return self.timm_model if self.vit is None else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BackboneSpec:
        """From ``to_dict`` output, including checkpoints that kept source / timm fields in ``extra``."""
        d = dict(d)
        extra = dict(d.get("extra") or {})
        for old, new in _LEGACY_EXTRA_FIELDS.items():
            if old in extra and new not in d:
                d[new] = extra.pop(old)
        if "timm_name" in d:  # checkpoints before ``timm_model`` covered every timm backbone
            d["timm_model"] = d.get("timm_model") or d.pop("timm_name")
            d.pop("timm_name", None)
        d["extra"] = extra
        if d.get("vit") is not None:
            d["vit"] = ViTConfig(**d["vit"])
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


def tiny_vit_spec(image_size: int) -> BackboneSpec:
    vit = ViTConfig(
        image_size=image_size, patch_size=16, width=192, layers=4, heads=3, stem="conv", cls_reads="last_block"
    )
    return BackboneSpec("tiny-vit", image_size, CLIP_MEAN, CLIP_STD, vit=vit, feature_dim=vit.width)


def backbone_spec(name: str, image_size: int, pretrained: str | None = None) -> BackboneSpec:
    """The architecture of backbone ``name`` at input size ``image_size`` (no weights, no network).

    ``pretrained``: the weights that will be loaded, when known. An open_clip tag decides the
    activation (QuickGELU for OpenAI-trained weights) and mean/std. A file cannot tell: for a local
    copy of OpenAI-trained weights name the ``*-quickgelu`` model (``ViT-B-16-quickgelu``).
    """
    if name == "tiny-vit":
        return tiny_vit_spec(image_size)
    if name.startswith("timm/"):
        return timm_spec(name, image_size)
    if _open_clip_config(name) is not None:
        return open_clip_spec(name, image_size, pretrained)
    raise ConfigError(
        f"unknown backbone {name!r}: use 'tiny-vit', an open_clip ViT name such as 'ViT-B-16', "
        "or 'timm/<model>' such as 'timm/vit_base_patch16_224' or 'timm/resnet50'"
    )


def build_backbone(spec: BackboneSpec) -> nn.Module:
    """A randomly initialised backbone of the given architecture; forward: [B, 3, S, S] → [B, D]."""
    if spec.vit is not None:
        return VisionTransformer(spec.vit)
    import timm

    return timm.create_model(spec.timm_model, pretrained=False, num_classes=0)


# --- open_clip -------------------------------------------------------------------------------------------------

# Vision options our ViT represents; any other option set away from open_clip's default is rejected.
_OPEN_CLIP_SUPPORTED = {"image_size", "layers", "width", "patch_size", "head_width", "mlp_ratio", "no_ln_pre"}
# Options that change neither the weights nor the class-token feature.
_OPEN_CLIP_IGNORED = {"output_tokens", "patch_dropout", "final_ln_after_pool"}


def _open_clip_config(name: str) -> dict | None:
    try:
        import open_clip
    except ImportError:
        return None
    return open_clip.get_model_config(name)


def is_file_like(pretrained: str) -> bool:
    """Whether a ``pretrained`` argument names a file (rather than a hub tag)."""
    return os.path.exists(pretrained) or os.sep in pretrained or pretrained.endswith(WEIGHT_SUFFIXES)


def open_clip_tag_cfg(name: str, tag: str) -> dict:
    """open_clip's record of pretrained tag ``tag`` for model ``name`` (url, hub file, mean/std, quick_gelu)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ConfigError(
            f"open_clip has no pretrained tag {tag!r} for {name}: known tags {tags}, or pass a local weights file"
        )
    return cfg


def open_clip_spec(name: str, image_size: int, pretrained: str | None = None) -> BackboneSpec:
    """An open_clip ViT's architecture from its model config, at input size ``image_size``."""
    from open_clip.model import CLIPVisionCfg

    cfg = _open_clip_config(name)
    if cfg is None:
        raise ConfigError(f"unknown open_clip model {name!r}")
    v = dict(cfg["vision_cfg"])
    if v.get("timm_model_name"):
        raise UnsupportedBackboneError(
            f"open_clip model {name!r} has a timm vision tower ({v['timm_model_name']}): use 'timm/<model>' instead"
        )
    if isinstance(v.get("layers"), (list, tuple)):
        raise UnsupportedBackboneError(f"open_clip model {name!r} is a modified-ResNet CLIP, not a ViT")
    defaults = asdict(CLIPVisionCfg())
    norm_kwargs = v.pop("norm_kwargs", None) or {}
    if set(norm_kwargs) - {"eps"}:
        raise UnsupportedBackboneError(f"open_clip model {name!r}: unsupported norm options {norm_kwargs}")
    exotic = {
        k: val
        for k, val in v.items()
        if k not in _OPEN_CLIP_SUPPORTED | _OPEN_CLIP_IGNORED and val != defaults.get(k, object())
    }
    if exotic:
        raise UnsupportedBackboneError(
            f"open_clip model {name!r} uses vision options our ViT does not support: {exotic} "
            "(we need class-token pooling, learned positional embeddings, no layer scale or attention pooling)"
        )
    size, patch = v.get("image_size", defaults["image_size"]), v.get("patch_size", defaults["patch_size"])
    if isinstance(size, (list, tuple)) or isinstance(patch, (list, tuple)):
        raise UnsupportedBackboneError(f"open_clip model {name!r}: non-square image or patch size ({size}, {patch})")
    width = v.get("width", defaults["width"])
    head_width = v.get("head_width", defaults["head_width"])
    quick_gelu = bool(cfg.get("quick_gelu", False))
    mean, std = CLIP_MEAN, CLIP_STD
    if pretrained and not is_file_like(pretrained):
        tag_cfg = open_clip_tag_cfg(name, pretrained)
        quick_gelu = quick_gelu or bool(tag_cfg.get("quick_gelu", False))
        mean, std = tuple(tag_cfg.get("mean", mean)), tuple(tag_cfg.get("std", std))
    vit = ViTConfig(
        image_size=image_size,
        patch_size=patch,
        width=width,
        layers=v.get("layers", defaults["layers"]),
        heads=width // head_width,
        mlp_ratio=v.get("mlp_ratio", defaults["mlp_ratio"]),
        act="quick_gelu" if quick_gelu else "gelu",
        ln_pre=not v.get("no_ln_pre", False),
        norm_eps=norm_kwargs.get("eps", 1e-5),
    )
    extra = {"pretrain_image_size": size, "embed_dim": cfg["embed_dim"]}
    return BackboneSpec(name, image_size, mean, std, vit=vit, feature_dim=width, source="open_clip", extra=extra)


# --- timm ------------------------------------------------------------------------------------------------------


def timm_meta_model(timm_name: str) -> nn.Module:
    """The timm model's structure without allocating or initialising weights."""
    import timm

    try:
        with torch.device("meta"):
            return timm.create_model(timm_name, pretrained=False)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise ConfigError(f"unknown timm model {timm_name!r} (backbone 'timm/{timm_name}')") from None
        raise


def _timm_vit_config(m: nn.Module, image_size: int, name: str) -> tuple[ViTConfig, bool]:
    """Our ViTConfig for a timm VisionTransformer (and whether its qkv has a bias); unsupported → error."""
    from timm.layers import Attention, Mlp, PatchEmbed
    from timm.layers.activations import QuickGELU
    from timm.models.vision_transformer import Block
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    def identity(module: nn.Module | None) -> bool:
        return module is None or isinstance(module, nn.Identity)

    if type(m) is not TimmViT:
        raise UnsupportedBackboneError(
            f"timm model {name!r} is a {type(m).__name__}, not a plain timm VisionTransformer our ViT can represent"
        )
    problems = []
    if getattr(m, "cls_token", None) is None:
        problems.append("no class token")
    if getattr(m, "num_reg_tokens", 0):
        problems.append("register tokens")
    if getattr(m, "no_embed_class", False) or getattr(m, "pos_embed", None) is None:
        problems.append("no learned positional embedding for the class token")
    if getattr(m, "global_pool", "token") != "token":
        problems.append(f"{m.global_pool!r} pooling instead of the class token")
    if not identity(getattr(m, "fc_norm", None)) or getattr(m, "attn_pool", None) is not None:
        problems.append("fc_norm / attention pooling head")
    pe = m.patch_embed
    if type(pe) is not PatchEmbed or not identity(getattr(pe, "norm", None)):
        problems.append("non-standard patch embedding")
    elif pe.img_size[0] != pe.img_size[1] or pe.patch_size[0] != pe.patch_size[1]:
        problems.append(f"non-square image or patch size {pe.img_size}, {pe.patch_size}")
    norms = [m.norm] + ([] if identity(m.norm_pre) else [m.norm_pre])
    acts = set()
    for b in m.blocks:
        if type(b) is not Block or type(b.attn) is not Attention or type(b.mlp) is not Mlp:
            problems.append(f"block type {type(b).__name__}")
            break
        if not (identity(b.ls1) and identity(b.ls2)):
            problems.append("layer scale")
        if not (identity(b.attn.q_norm) and identity(b.attn.k_norm)):
            problems.append("qk_norm")
        if not (identity(getattr(b.attn, "norm", None)) and identity(getattr(b.mlp, "norm", None))):
            problems.append("inner norms in attention / MLP")
        if b.attn.proj.bias is None or b.mlp.fc1.bias is None or b.mlp.fc2.bias is None:
            problems.append("linear layers without bias")
        norms += [b.norm1, b.norm2]
        acts.add(type(b.mlp.act))
        if isinstance(b.mlp.act, nn.GELU) and b.mlp.act.approximate != "none":
            problems.append("tanh-approximate GELU")
    if not all(isinstance(n, nn.LayerNorm) for n in norms) or len({n.eps for n in norms}) > 1:
        problems.append("norm layers other than one LayerNorm kind")
    if acts - {nn.GELU, QuickGELU}:
        problems.append(f"activation {sorted(a.__name__ for a in acts)}")
    if problems:
        raise UnsupportedBackboneError(
            f"timm model {name!r} is a ViT variant our ViT cannot represent: {', '.join(dict.fromkeys(problems))}"
        )
    b = m.blocks[0]
    vit = ViTConfig(
        image_size=image_size,
        patch_size=pe.patch_size[0],
        width=m.embed_dim,
        layers=len(m.blocks),
        heads=b.attn.num_heads,
        mlp_ratio=b.mlp.fc1.out_features / m.embed_dim,
        act="quick_gelu" if acts == {QuickGELU} else "gelu",
        ln_pre=not identity(m.norm_pre),
        patch_bias=pe.proj.bias is not None,
        norm_eps=m.norm.eps,
    )
    return vit, b.attn.qkv.bias is not None


def _timm_classifiers(m: nn.Module) -> list[str]:
    names = m.pretrained_cfg.get("classifier") or []
    return [names] if isinstance(names, str) else list(names)


def timm_spec(name: str, image_size: int) -> BackboneSpec:
    """``timm/<model>``: ViTs become our VisionTransformer, other models stay timm modules."""
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    timm_name = name.removeprefix("timm/")
    m = timm_meta_model(timm_name)
    mean = tuple(m.pretrained_cfg.get("mean", IMAGENET_MEAN))
    std = tuple(m.pretrained_cfg.get("std", IMAGENET_STD))
    timm = {"source": "timm", "timm_model": timm_name, "timm_head": tuple(_timm_classifiers(m))}
    if isinstance(m, TimmViT) or timm_name.startswith("vit_"):
        vit, qkv_bias = _timm_vit_config(m, image_size, timm_name)
        extra = {"pretrain_image_size": m.patch_embed.img_size[0]}
        return BackboneSpec(
            name, image_size, mean, std, vit=vit, feature_dim=vit.width, qkv_bias=qkv_bias, extra=extra, **timm
        )
    m.reset_classifier(0)
    # The pooled feature's size, from a shape-only forward (num_features misses pre-logits layers).
    dim = m(torch.empty(1, 3, image_size, image_size, device="meta")).shape[-1]
    return BackboneSpec(name, image_size, mean, std, feature_dim=dim, **timm)
