"""HOI detection runtime: detections → pairs → pair logits (one backbone pass per frame) → HOI triplets.

Layers inside: ``contract`` (the backend protocol, ``RuntimeMeta``, graph input/output names) and
``sidecar`` (the typed ``Sidecar``: an export's ``model.json``) are leaves; ``backends`` /
``tensorrt_backend`` implement the protocol, and ``load_backend`` opens any model file as one;
``pairing`` turns detections into pairs and priors; ``detector`` is the ``HOIDetector`` users embed;
``detect`` runs it over files; ``io`` reads those files.
"""

from defr.detections import DetectionError, Detections
from defr.images import ImageInputError
from defr.runtime.backends import OnnxBackend, TorchBackend, load_backend
from defr.runtime.contract import BackendError, PairBackend, RuntimeMeta
from defr.runtime.detector import HOIDetector, ImageResult, load_detector
from defr.runtime.openvino_backend import OpenVinoBackend, OpenVinoConfig
from defr.runtime.pairing import PairConfig, Pairs, make_pairs, pair_priors
from defr.runtime.tensorrt_backend import TensorRTBackend

__all__ = [
    "BackendError",
    "DetectionError",
    "Detections",
    "HOIDetector",
    "ImageInputError",
    "ImageResult",
    "OnnxBackend",
    "OpenVinoBackend",
    "OpenVinoConfig",
    "PairBackend",
    "PairConfig",
    "Pairs",
    "RuntimeMeta",
    "TensorRTBackend",
    "TorchBackend",
    "load_backend",
    "load_detector",
    "make_pairs",
    "pair_priors",
]
