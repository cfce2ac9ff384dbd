"""Models: backbones, the DEFR classifier, pair attention, checkpoints."""

from defr.model.backbones import (
    BackboneSpec,
    PretrainedWeightsError,
    UnknownBackboneError,
    UnsupportedBackboneError,
    backbone_spec,
    build_backbone,
    load_pretrained,
)
from defr.model.defr import DEFR, CheckpointError, DEFRConfig, load_checkpoint, save_checkpoint
from defr.model.factory import build_model, clip_head_weights
from defr.model.official import OfficialCheckpointError, is_official_checkpoint, load_official_checkpoint
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
    "PretrainedWeightsError",
    "UnknownBackboneError",
    "UnsupportedBackboneError",
    "load_pretrained",
    "build_model",
    "clip_head_weights",
    "OfficialCheckpointError",
    "is_official_checkpoint",
    "load_official_checkpoint",
]
