"""A plain vision transformer with OpenAI-CLIP parameter names.

One implementation serves every ViT backbone: open_clip and timm weights are renamed into it
(``defr.model.backbones``), and the released DEFR checkpoint uses these names already. It
exposes the token sequence after any number of blocks, which the pair runtime needs.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from defr.errors import ConfigError
from defr.typecheck import check_field_types

# Sane bounds of a ViT's integer sizes: generous for every real model (ViT-bigG: width 1664, 48
# layers; 1344 px inputs), small enough that a config read from a file cannot ask for gigabytes
# before its weights are compared with it.
VIT_LIMITS = {
    "image_size": (1, 8192),
    "patch_size": (1, 1024),
    "width": (1, 16384),
    "layers": (1, 512),
    "heads": (1, 1024),
}


@dataclass
class ViTConfig:
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    act: str = "gelu"  # "quick_gelu" for OpenAI CLIP weights
    ln_pre: bool = True  # CLIP normalises tokens before the blocks; timm ViTs do not
    patch_bias: bool = False  # timm's patch embedding has a bias, CLIP's has none
    norm_eps: float = 1e-5
    stem: str = "patch"  # "conv": a convolutional stem instead of the patch projection (tiny-vit)
    # "last_block": the CLS token reads the patches only in the last block (tiny-vit; as CaiT's class
    # attention), so that what DEFR's last-layer pair mask hides from it is hidden; "every_block": CLIP, timm
    cls_reads: str = "every_block"

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    def __post_init__(self) -> None:
        check_field_types(self)
        for name, (low, high) in VIT_LIMITS.items():
            if not low <= getattr(self, name) <= high:
                raise ConfigError(f"ViTConfig.{name} must be in [{low}, {high}], got {getattr(self, name)}")
        if not 0 < self.mlp_ratio <= 64:
            raise ConfigError(f"ViTConfig.mlp_ratio must be in (0, 64], got {self.mlp_ratio}")
        if not 0 < self.norm_eps < 1:
            raise ConfigError(f"ViTConfig.norm_eps must be in (0, 1), got {self.norm_eps}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.width % self.heads:
            raise ConfigError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.act not in ("gelu", "quick_gelu"):
            raise ConfigError(f"act must be 'gelu' or 'quick_gelu', not {self.act!r}")
        if self.stem not in ("patch", "conv"):
            raise ConfigError(f"stem must be 'patch' or 'conv', not {self.stem!r}")
        if self.cls_reads not in ("every_block", "last_block"):
            raise ConfigError(f"cls_reads must be 'every_block' or 'last_block', not {self.cls_reads!r}")
        if self.stem == "conv" and self.patch_size != 16:
            raise ConfigError(f"the conv stem makes 16-pixel patches, not {self.patch_size}")
        if self.stem == "conv" and self.width % 8:
            raise ConfigError(f"the conv stem needs a width divisible by 8, not {self.width}")


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter names."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: [B, L, D] → q, k, v: [B, heads, L, D/heads]."""
        b, n, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, L, D]; attn_mask: additive, broadcastable to [B, heads, L, L]."""
        b, n, d = x.shape
        q, k, v = self.qkv(x)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        hidden = int(cfg.width * cfg.mlp_ratio)
        self.ln_1 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.attn = Attention(cfg.width, cfg.heads)
        self.ln_2 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        act = QuickGELU() if cfg.act == "quick_gelu" else nn.GELU()
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(cfg.width, hidden)), ("gelu", act), ("c_proj", nn.Linear(hidden, cfg.width))]
            )
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(cfg) for _ in range(cfg.layers))


class ConvStem(nn.Sequential):
    """Four 3×3 stride-2 convolutions (BatchNorm, ReLU) and a 1×1 projection: one token per 16×16
    patch, like the patch projection, but a randomly initialised ViT trains several times faster
    with it on small data (Xiao et al., 2021, "Early convolutions help transformers see better")."""

    def __init__(self, width: int):
        channels = [3, width // 8, width // 4, width // 2, width]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        super().__init__(*layers, nn.Conv2d(width, width, 1))


class VisionTransformer(nn.Module):
    """Image → tokens → CLS feature. Parameter names follow OpenAI CLIP's ``visual`` (no ``proj``)."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        if cfg.stem == "conv":
            self.conv1: nn.Module = ConvStem(w)
        else:
            self.conv1 = nn.Conv2d(3, w, cfg.patch_size, cfg.patch_size, bias=cfg.patch_bias)
        self.class_embedding = nn.Parameter(torch.randn(w) * w**-0.5)
        self.positional_embedding = nn.Parameter(torch.randn(cfg.grid_size**2 + 1, w) * w**-0.5)
        self.ln_pre = nn.LayerNorm(w, eps=cfg.norm_eps) if cfg.ln_pre else nn.Identity()
        self.transformer = Transformer(cfg)
        self.ln_post = nn.LayerNorm(w, eps=cfg.norm_eps)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer.resblocks

    @property
    def width(self) -> int:
        return self.cfg.width

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images: [B, 3, S, S] normalised → tokens [B, 1 + G*G, D] (CLS first, patches row-major)."""
        x = self.conv1(images).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.ln_pre(x)

    def tokens(self, images: torch.Tensor, num_blocks: int | None = None) -> torch.Tensor:
        """Tokens after the first ``num_blocks`` blocks (all by default): [B, 1 + G*G, D]."""
        x = self.embed(images)
        early = None  # the attention mask of every block but the last
        if self.cfg.cls_reads == "last_block":
            early = self.cls_reads_only_itself(x.shape[1], x.dtype, x.device)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks[: len(self.blocks) if num_blocks is None else num_blocks]):
            x = block(x, early if i < last else None)
        return x

    @staticmethod
    def cls_reads_only_itself(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Additive attention mask [1, 1, n, n]: the CLS row sees only the CLS token; patch rows see every token."""
        mask = torch.zeros(1, 1, n, n, dtype=dtype, device=device)
        mask[0, 0, 0, 1:] = float("-inf")
        return mask

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: [B, 3, S, S] → CLS feature after ``ln_post``: [B, D]."""
        return self.ln_post(self.tokens(images)[:, 0])


def resize_positional_embedding(pos: torch.Tensor, grid_size: int) -> torch.Tensor:
    """pos: [1 + g*g, D] → [1 + grid_size², D], bicubic over the patch grid; CLS row kept."""
    old = math.isqrt(pos.shape[0] - 1)
    if old * old != pos.shape[0] - 1:
        raise ConfigError(f"positional embedding of {pos.shape[0]} rows is not 1 + a square grid")
    if old == grid_size:
        return pos
    grid = pos[1:].reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(grid_size, grid_size), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(grid_size * grid_size, -1).to(pos.dtype)
    return torch.cat([pos[:1], grid], dim=0)
