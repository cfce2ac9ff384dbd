"""HOI detection runtime: detections → pairs → pair logits (one backbone pass per frame) → HOI triplets.

Layers inside: ``contract`` (the backend protocol, ``RuntimeMeta``, graph input/output names) and
``sidecar`` (the typed ``Sidecar``: an export's ``model.json``) are leaves; ``backends``,
``openvino_backend`` and ``tensorrt_backend`` implement the protocol; ``registry`` holds the one table
of runtimes and the front door, ``load_backend`` (any model file, runtime and precision → a backend);
``pairing`` turns detections into pairs and priors; ``detector`` is the ``HOIDetector`` users embed;
``detect`` runs it over files; ``io`` reads those files.
"""

from defr.detections import DetectionError, Detections
from defr.images import ImageInputError
from defr.runtime.backends import OnnxBackend, TorchBackend
from defr.runtime.contract import BackendError, PairBackend, RuntimeMeta
from defr.runtime.detector import HOIDetector, ImageResult, load_detector
from defr.runtime.openvino_backend import OpenVinoBackend, OpenVinoConfig
from defr.runtime.pairing import PairConfig, Pairs, make_pairs, pair_priors
from defr.runtime.registry import RUNTIMES, ModelOptions, load_backend
from defr.runtime.tensorrt_backend import TensorRTBackend

__all__ = [
    "BackendError",
    "DetectionError",
    "Detections",
    "HOIDetector",
    "ImageInputError",
    "ImageResult",
    "ModelOptions",
    "OnnxBackend",
    "OpenVinoBackend",
    "OpenVinoConfig",
    "PairBackend",
    "PairConfig",
    "Pairs",
    "RUNTIMES",
    "RuntimeMeta",
    "TensorRTBackend",
    "TorchBackend",
    "load_backend",
    "load_detector",
    "make_pairs",
    "pair_priors",
]
