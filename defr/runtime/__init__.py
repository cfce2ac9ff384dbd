"""HOI detection runtime: detections → pairs → pair logits (one backbone pass per frame) → HOI triplets."""

from defr.runtime.detector import (
    BackendError,
    HOIDetector,
    ImageInputError,
    ImageResult,
    PairBackend,
    RuntimeMeta,
    TorchBackend,
    load_detector,
)
from defr.runtime.pairs import DetectionError, PairConfig, Pairs, hico_labels_from_coco, make_pairs, pair_priors

__all__ = [
    "BackendError",
    "DetectionError",
    "HOIDetector",
    "ImageInputError",
    "ImageResult",
    "PairBackend",
    "PairConfig",
    "Pairs",
    "RuntimeMeta",
    "TorchBackend",
    "hico_labels_from_coco",
    "load_detector",
    "make_pairs",
    "pair_priors",
]
