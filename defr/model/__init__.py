"""Models: backbones, the DEFR classifier, pair attention, checkpoints."""

from defr.model.backbones import BackboneSpec, backbone_spec, build_backbone
from defr.model.defr import DEFR, CheckpointError, DEFRConfig, load_checkpoint, save_checkpoint
from defr.model.pairs import pair_masks
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
    "load_checkpoint",
    "save_checkpoint",
    "pair_masks",
]
