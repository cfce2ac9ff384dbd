"""Backbones by name: architecture (offline, recorded in checkpoints) and pretrained weights.

Names:
- ``tiny-vit``: a small random-init ViT (patch 16, width 192, 4 blocks) for tests and demos.
- open_clip ViTs by model name: ``ViT-B-32``, ``ViT-B-16``, ``ViT-L-14``, … (OpenAI CLIP naming).
- timm models as ``timm/<name>``: ViTs (``timm/vit_base_patch16_224``) and ResNets
  (``timm/resnet50``).

Every ViT becomes a ``defr.model.vit.VisionTransformer``; ResNets stay timm modules and can
classify but not do pair attention.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from defr.model.vit import VisionTransformer, ViTConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class UnknownBackboneError(ValueError):
    pass


@dataclass
class BackboneSpec:
    """Everything needed to rebuild a backbone's architecture without downloading anything."""

    name: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    vit: ViTConfig | None = None  # set for ViTs
    timm_name: str | None = None  # set for non-ViT timm models
    feature_dim: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BackboneSpec:
        d = dict(d)
        if d.get("vit") is not None:
            d["vit"] = ViTConfig(**d["vit"])
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


def tiny_vit_spec(image_size: int) -> BackboneSpec:
    vit = ViTConfig(image_size=image_size, patch_size=16, width=192, layers=4, heads=3)
    return BackboneSpec("tiny-vit", image_size, CLIP_MEAN, CLIP_STD, vit=vit, feature_dim=vit.width)


def backbone_spec(name: str, image_size: int) -> BackboneSpec:
    """The architecture of backbone ``name`` at input size ``image_size`` (no weights, no network)."""
    if name == "tiny-vit":
        return tiny_vit_spec(image_size)
    raise UnknownBackboneError(
        f"unknown backbone {name!r}: use 'tiny-vit', an open_clip ViT name such as 'ViT-B-16', "
        "or 'timm/<model>' such as 'timm/vit_base_patch16_224' or 'timm/resnet50'"
    )


def build_backbone(spec: BackboneSpec) -> nn.Module:
    """A randomly initialised backbone of the given architecture; forward: [B, 3, S, S] → [B, D]."""
    if spec.vit is not None:
        return VisionTransformer(spec.vit)
    raise UnknownBackboneError(f"cannot build backbone {spec.name!r}")


def load_pretrained(backbone: nn.Module, spec: BackboneSpec, pretrained: str) -> dict:
    """Load weights into ``backbone`` from a tag (hub, needs network) or a local file.

    Returns a dict of extras the weights came with (e.g. CLIP's visual ``proj`` for the
    official head).
    """
    raise UnknownBackboneError(f"backbone {spec.name!r} has no pretrained weights (asked for {pretrained!r})")


def load_state_file(path: str) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a torch file read with ``weights_only=True``."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state
