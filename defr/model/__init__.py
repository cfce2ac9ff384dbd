"""Models: backbones, the DEFR classifier, pair attention, checkpoints.

Front doors: ``build_model`` (for training: pretrained backbone, language-initialised head),
``create_model`` (random weights, cheap), ``load_model`` (any model file: ours or the released
``.pth``), ``save_checkpoint``.
"""

from defr.model.backbones import BackboneSpec, UnsupportedBackboneError, backbone_spec, build_backbone
from defr.model.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from defr.model.defr import DEFR, DEFRConfig
from defr.model.factory import build_model, clip_head_weights, create_model
from defr.model.official import is_official_checkpoint, load_official_checkpoint
from defr.model.pair_attention import pair_masks
from defr.model.pretrained import load_pretrained
from defr.model.vit import VisionTransformer, ViTConfig

__all__ = [
    "DEFR",
    "DEFRConfig",
    "BackboneSpec",
    "ViTConfig",
    "VisionTransformer",
    "CheckpointError",
    "backbone_spec",
    "build_backbone",
    "build_model",
    "create_model",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
    "pair_masks",
    "UnsupportedBackboneError",
    "load_pretrained",
    "clip_head_weights",
    "is_official_checkpoint",
    "load_official_checkpoint",
]
