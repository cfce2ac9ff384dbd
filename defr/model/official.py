"""Import the released DEFR checkpoint (DESIGN.md §3) as a ``DEFR`` model.

Layout: ``torch.save({'model_state_dict': ...})`` with keys prefixed ``module.``: ``logit_scale``,
``classifier`` [600, D] and the OpenAI-CLIP visual tower ``visual_encoder.visual.*`` without
``proj``. The architecture (width, layers, patch, grid) is read from the tensor shapes; heads =
width / 64 and QuickGELU as in OpenAI CLIP; the head is the released ``clip`` head.
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from pathlib import Path

import torch

from defr.errors import ConfigError
from defr.model.backbones import CLIP_MEAN, CLIP_STD, BackboneSpec
from defr.model.defr import DEFR, DEFRConfig
from defr.model.state_dicts import state_dict_problems
from defr.model.vit import ViTConfig, resize_positional_embedding

PREFIX = "visual_encoder.visual."
HEAD_WIDTH = 64  # OpenAI CLIP ViTs: heads = width / 64
REQUIRED = ("logit_scale", "classifier") + tuple(
    PREFIX + k for k in ("conv1.weight", "class_embedding", "positional_embedding", "ln_pre.weight", "ln_post.weight")
)


def is_official_checkpoint(path: str | os.PathLike) -> bool:
    """Cheap check: a torch zip archive whose pickle names ``model_state_dict`` and the visual tower."""
    try:
        with zipfile.ZipFile(path) as z:
            pkl = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
            data = z.read(pkl) if pkl else b""
    except (OSError, zipfile.BadZipFile):
        return False
    return b"model_state_dict" in data and b"visual_encoder.visual.conv1.weight" in data


def read_official_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The released state dict, ``module.`` prefixes removed; ConfigError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or pickled code that weights_only refuses
        raise ConfigError(f"{path}: not a released DEFR checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model_state_dict"), dict):
        keys = list(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ConfigError(f"{path}: not a released DEFR checkpoint: no 'model_state_dict' (has {keys})")
    state = {k.removeprefix("module."): v for k, v in ckpt["model_state_dict"].items()}
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise ConfigError(f"{path}: not a released DEFR checkpoint: missing {missing}")
    return state


def official_vit_config(state: dict[str, torch.Tensor], image_size: int | None = None) -> ViTConfig:
    """The ViT architecture implied by the released tensors' shapes (at ``image_size``, default the file's)."""
    conv = state[PREFIX + "conv1.weight"]  # [D, 3, p, p]
    width, patch = conv.shape[0], conv.shape[-1]
    grid = math.isqrt(state[PREFIX + "positional_embedding"].shape[0] - 1)
    layers = 1 + max(
        (int(m.group(1)) for k in state if (m := re.match(re.escape(PREFIX) + r"transformer\.resblocks\.(\d+)\.", k))),
        default=-1,
    )
    if layers == 0:
        raise ConfigError(f"no {PREFIX}transformer.resblocks.* tensors")
    hidden = state[PREFIX + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    return ViTConfig(
        image_size=image_size or grid * patch,
        patch_size=patch,
        width=width,
        layers=layers,
        heads=width // HEAD_WIDTH,
        mlp_ratio=hidden / width,
        act="quick_gelu",
    )


def load_official_checkpoint(path: str | os.PathLike, image_size: int | None = None) -> DEFR:
    """The released DEFR model (600 HICO classes, ``clip`` head), eval mode.

    ``image_size``: input size; default the file's (grid × patch); another size interpolates the
    positional embedding (bicubic).
    """
    from defr import vocab

    state = read_official_state(path)
    classes = vocab.hico().class_names
    classifier = state.pop("classifier")
    if classifier.ndim != 2 or classifier.shape[0] != len(classes):
        raise ConfigError(
            f"{path}: classifier has shape {tuple(classifier.shape)}, expected [{len(classes)}, D] (HICO's 600 classes)"
        )
    logit_scale = float(state.pop("logit_scale").reshape(()))
    visual = {k.removeprefix(PREFIX): v for k, v in state.items() if k.startswith(PREFIX)}
    others = [k for k in state if not k.startswith(PREFIX)]
    if others:
        raise ConfigError(f"{path}: unexpected tensors outside the visual tower: {others[:6]}")
    try:
        vit = official_vit_config(state, image_size)
    except (KeyError, ValueError) as e:
        raise ConfigError(f"{path}: architecture: {e}") from None
    if classifier.shape[1] != vit.width:
        raise ConfigError(f"{path}: classifier width {classifier.shape[1]} does not match the visual width {vit.width}")
    trained_size = math.isqrt(visual["positional_embedding"].shape[0] - 1) * vit.patch_size
    visual["positional_embedding"] = resize_positional_embedding(visual["positional_embedding"], vit.grid_size)
    extra = {"pretrain_image_size": trained_size}
    spec = BackboneSpec(
        "defr-official",
        vit.image_size,
        CLIP_MEAN,
        CLIP_STD,
        vit=vit,
        feature_dim=vit.width,
        source="defr-official",
        extra=extra,
    )
    init = {"init": "official", "file": str(path), "head_rule": "released classifier (fine-tuned T·Pᵀ), clip head"}
    model = DEFR(DEFRConfig(spec, classes, head="clip", logit_scale=logit_scale, init=init))
    problems = state_dict_problems(model.backbone, visual)
    if problems:
        raise ConfigError(f"{path}: the visual tower does not fit its own shapes: {problems}")
    bad = [
        k for k, v in {**visual, "classifier": classifier}.items() if v.is_floating_point() and not v.isfinite().all()
    ]
    if bad:
        raise ConfigError(f"{path}: non-finite weights (NaN or inf) in {len(bad)} tensor(s): {bad[:4]}")
    model.backbone.load_state_dict(visual)
    with torch.no_grad():
        model.classifier.copy_(classifier)
    return model.eval()
