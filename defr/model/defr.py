"""The DEFR model: a backbone's final CLS feature and a cosine classifier over HOI classes.

Heads:
- ``cosine`` (default): ``logit_i = γ · cos(f, w_i)``, γ = exp(logit_scale) = 100.
- ``clip`` (the released CLIP model): ``logit_i = γ · f̂ · w_i`` with the classifier rows not
  normalised, initialised as ``W = T·Pᵀ`` (text embeddings T, CLIP's visual projection P),
  γ = exp(4.61). Then ``logit = (|fP| / |f|) · CLIP zero-shot logit``: the same ranking per image.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from defr.files import atomic_path
from defr.model.backbones import BackboneSpec, build_backbone
from defr.model.pairs import pair_cls_features, pair_masks
from defr.model.vit import VisionTransformer

CHECKPOINT_FORMAT = "defr-checkpoint/1"
HEADS = ("cosine", "clip")


class CheckpointError(ValueError):
    pass


@dataclass
class DEFRConfig:
    backbone: BackboneSpec
    class_names: list[str]
    head: str = "cosine"
    logit_scale: float = math.log(100.0)
    # How the classifier was initialised, recorded for humans (text encoder, prompts, ...).
    init: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, not {self.head!r}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return self.backbone.image_size

    def to_dict(self) -> dict:
        d = asdict(self)
        d["backbone"] = self.backbone.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DEFRConfig:
        d = dict(d)
        d["backbone"] = BackboneSpec.from_dict(d["backbone"])
        return cls(**d)


class DEFR(nn.Module):
    def __init__(self, cfg: DEFRConfig, backbone: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone if backbone is not None else build_backbone(cfg.backbone)
        self.classifier = nn.Parameter(torch.randn(cfg.num_classes, cfg.backbone.feature_dim) * 0.02)
        # Fixed, not trained (as in the paper); a buffer so checkpoints carry it.
        self.register_buffer("logit_scale", torch.tensor(float(cfg.logit_scale)))

    @property
    def vit(self) -> VisionTransformer:
        if not isinstance(self.backbone, VisionTransformer):
            raise TypeError(f"backbone {self.cfg.backbone.name!r} is not a ViT: pair attention needs a ViT backbone")
        return self.backbone

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """features: [N, D] → logits [N, C]."""
        w = F.normalize(self.classifier, dim=-1) if self.cfg.head == "cosine" else self.classifier
        return self.logit_scale.exp() * F.normalize(features, dim=-1) @ w.t().to(features.dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: [B, 3, S, S] normalised → logits [B, C]."""
        return self.classify(self.backbone(images))

    def forward_pairs(
        self,
        images: torch.Tensor,
        boxes_h: torch.Tensor,
        boxes_o: torch.Tensor,
        pair_index: torch.Tensor,
        with_image_logits: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Pair logits with mask-1, running the backbone once per image.

        images: [B, 3, S, S]; boxes_h, boxes_o: [P, 4] float, pixels of the S×S input;
        pair_index: [P] long, image of each pair. Returns pair logits [P, C], and the image
        logits [B, C] too when ``with_image_logits`` (an unmasked CLS row per image, for free).
        """
        vit = self.vit
        s, p = vit.cfg.image_size, vit.cfg.patch_size
        tokens = vit.tokens(images, num_blocks=len(vit.blocks) - 1)
        masks = pair_masks(boxes_h, boxes_o, s, p)
        index = pair_index.long()
        if with_image_logits:
            b = images.shape[0]
            masks = torch.cat([masks, masks.new_ones(b, masks.shape[1])])
            index = torch.cat([index, torch.arange(b, device=index.device)])
        logits = self.classify(vit.ln_post(pair_cls_features(vit.blocks[-1], tokens, masks, index)))
        if with_image_logits:
            return logits[: pair_index.shape[0]], logits[pair_index.shape[0] :]
        return logits

    def forward_pairs_dense(
        self,
        images: torch.Tensor,
        boxes_h: torch.Tensor,
        boxes_o: torch.Tensor,
        pair_index: torch.Tensor,
        masked_layers: int = 1,
    ) -> torch.Tensor:
        """Reference: the released approach, one full token sequence per pair through the last
        ``masked_layers`` blocks with a dense additive [P, 1, L, L] mask on the CLS row.

        Same arguments as ``forward_pairs``; memory O(P·L²). mask-1 equals ``forward_pairs``.
        """
        vit = self.vit
        if not 1 <= masked_layers <= len(vit.blocks):
            raise ValueError(f"masked_layers must be in [1, {len(vit.blocks)}], not {masked_layers}")
        tokens = vit.tokens(images, num_blocks=len(vit.blocks) - masked_layers)[pair_index.long()]
        visible = pair_masks(boxes_h, boxes_o, vit.cfg.image_size, vit.cfg.patch_size)
        n = tokens.shape[1]
        mask = tokens.new_zeros(visible.shape[0], 1, n, n)
        mask[:, 0, 0, 1:] = torch.where(visible, 0.0, float("-inf"))
        for block in vit.blocks[len(vit.blocks) - masked_layers :]:
            tokens = block(tokens, attn_mask=mask)
        return self.classify(vit.ln_post(tokens[:, 0]))


def save_checkpoint(model: DEFR, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write ``model`` as one safetensors file whose header records its ``DEFRConfig``.

    Written to a temporary name in the same folder, then renamed: never half-written.
    """
    from safetensors.torch import save_file

    path = Path(path)
    header = {"format": CHECKPOINT_FORMAT, "config": json.dumps(model.cfg.to_dict())}
    if metadata:
        header["metadata"] = json.dumps(metadata)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata=header)


def read_checkpoint_header(path: str | os.PathLike) -> dict:
    """The safetensors header metadata of a DEFR checkpoint; CheckpointError if it is not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for non-safetensors files
        raise CheckpointError(f"{path}: not a DEFR checkpoint (not a safetensors file: {e})") from None
    if header.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a DEFR checkpoint (header format {header.get('format')!r})")
    return header


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> DEFR:
    """Rebuild the model recorded in a checkpoint written by ``save_checkpoint``; eval mode."""
    from safetensors.torch import load_file

    header = read_checkpoint_header(path)
    model = DEFR(DEFRConfig.from_dict(json.loads(header["config"])))
    state = load_file(str(path), device=str(map_location))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: checkpoint does not match its config: missing {missing}, unexpected {unexpected}"
        )
    return model.to(map_location).eval()
