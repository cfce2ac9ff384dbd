"""The DEFR model: a backbone's final CLS feature and a cosine classifier over HOI classes.

Every head computes ``logit_c = γ · cos(f, w_c)`` (the paper's Eq. 1, and what the released code
does in classification and detection alike: ``ClipViT.forward``, ``HoiHead.forward`` normalise
the classifier rows and the feature). Heads differ only in initialisation and γ:
- ``cosine`` (default): rows from random or language embeddings, γ = exp(logit_scale) = 100.
- ``clip`` (the released CLIP model): rows initialised as ``W = T·Pᵀ`` (text embeddings T, CLIP's
  visual projection P folded into the class proxies), γ = exp(4.61), fixed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from defr.choices import DEFAULT_MASK_MODE
from defr.errors import ConfigError
from defr.model.backbones import BackboneSpec, UnsupportedBackboneError, build_backbone
from defr.model.pair_attention import cls_attention_bias, pair_cls_features, pair_masks
from defr.model.vit import VisionTransformer, resize_positional_embedding
from defr.typecheck import check_field_types

HEADS = ("cosine", "clip")


@dataclass
class DEFRConfig:
    backbone: BackboneSpec
    class_names: list[str]
    head: str = "cosine"
    logit_scale: float = math.log(100.0)
    # How the classifier was initialised, recorded for humans (text encoder, prompts, ...).
    init: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.head not in HEADS:
            raise ConfigError(f"head must be one of {HEADS}, not {self.head!r}")

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
            raise UnsupportedBackboneError(
                f"backbone {self.cfg.backbone.name!r} is not a ViT: pair attention needs a ViT backbone"
            )
        return self.backbone

    def at_image_size(self, image_size: int) -> DEFR:
        """This model for inputs of ``image_size`` px: a copy whose positional embedding is
        interpolated (bicubic) to the new patch grid; ``self`` when the size is already that."""
        spec = self.cfg.backbone
        if spec.vit is None:
            raise UnsupportedBackboneError(f"backbone {spec.name!r} is not a ViT: only ViTs change input size")
        if image_size == spec.image_size:
            return self
        if image_size < spec.vit.patch_size or image_size % spec.vit.patch_size:
            raise ConfigError(f"image size {image_size} is not a multiple of the patch size {spec.vit.patch_size}")
        vit = replace(spec.vit, image_size=image_size)
        resized = DEFR(replace(self.cfg, backbone=replace(spec, image_size=image_size, vit=vit)))
        state = self.state_dict()
        key = "backbone.positional_embedding"
        state[key] = resize_positional_embedding(state[key], vit.grid_size)
        resized.load_state_dict(state)
        return resized.to(self.logit_scale.device).train(self.training)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """features: [N, D] → logits [N, C] = γ · cos(f, w_c), every head."""
        w = F.normalize(self.classifier, dim=-1)
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
        mask_mode: str = DEFAULT_MASK_MODE,
        attention: str = "auto",
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Pair logits with mask-1, running the backbone once per image.

        images: [B, 3, S, S]; boxes_h, boxes_o: [P, 4] float, pixels of the S×S input;
        pair_index: [P] long, image of each pair; mask_mode: ``hard`` or ``released``
        (``defr.model.pair_attention``); attention: ``auto`` (Triton on CUDA, the grouped PyTorch
        path elsewhere), ``triton`` or ``reference`` (``defr.kernels``). Returns pair logits
        [P, C], and the image logits [B, C] too when ``with_image_logits`` (an unmasked CLS row per
        image, for free).
        """
        vit = self.vit
        s, p = vit.cfg.image_size, vit.cfg.patch_size
        tokens = vit.tokens(images, num_blocks=len(vit.blocks) - 1)
        index = pair_index.long()
        if with_image_logits:  # a whole-image box: every patch visible, a zero bias in either mode
            b = images.shape[0]
            whole = boxes_h.new_tensor([0.0, 0.0, s, s]).expand(b, 4)
            boxes_h, boxes_o = torch.cat([boxes_h, whole]), torch.cat([boxes_o, whole])
            index = torch.cat([index, torch.arange(b, device=index.device)])
        features = pair_cls_features(
            vit.blocks[-1],
            tokens,
            boxes_h,
            boxes_o,
            index,
            image_size=s,
            patch_size=p,
            mask_mode=mask_mode,
            attention=attention,
        )
        logits = self.classify(vit.ln_post(features))
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
        mask_mode: str = DEFAULT_MASK_MODE,
    ) -> torch.Tensor:
        """Reference: the released approach, one full token sequence per pair through the last
        ``masked_layers`` blocks with a dense additive [P, 1, L, L] mask on the CLS row.

        Same arguments as ``forward_pairs``; memory O(P·L²). mask-1 equals ``forward_pairs``.
        """
        vit = self.vit
        if not 1 <= masked_layers <= len(vit.blocks):
            raise ConfigError(f"masked_layers must be in [1, {len(vit.blocks)}], not {masked_layers}")
        if masked_layers > 1 and vit.cfg.cls_reads == "last_block":
            raise ConfigError("mask-n (masked_layers > 1) needs a CLS token that reads every block, not only the last")
        tokens = vit.tokens(images, num_blocks=len(vit.blocks) - masked_layers)[pair_index.long()]
        visible = pair_masks(boxes_h, boxes_o, vit.cfg.image_size, vit.cfg.patch_size)
        n = tokens.shape[1]
        mask = tokens.new_zeros(visible.shape[0], 1, n, n)
        mask[:, 0, 0, :] = cls_attention_bias(visible, mask_mode, tokens.dtype)
        for block in vit.blocks[len(vit.blocks) - masked_layers :]:
            tokens = block(tokens, attn_mask=mask)
        return self.classify(vit.ln_post(tokens[:, 0]))
