"""``HOIDetector``: images + object detections → scored HOI triplets, over a pluggable pair backend.

A frame batch goes through ONE backend call: every image resized to S×S (bicubic, aspect not
kept) and normalised; the pairs of all images concatenated with ``pair_index``. The backend
returns pair logits [P, C] and image logits [B, C]; the score of class c for a pair is
``sigmoid(logit) · prior`` (``defr.runtime.pairing.pair_priors``).

Frames without pairs still get image logits. When a whole batch has no pair, backends that do
not accept P = 0 (exported graphs and engines) get one dummy whole-image pair whose output is
discarded (``defr.runtime.contract.with_dummy_pair``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from defr.errors import ConfigError, DefrError
from defr.model import load_model
from defr.runtime.backends import OnnxBackend, TorchBackend
from defr.runtime.contract import BackendError, PairBackend, RuntimeMeta, with_dummy_pair
from defr.runtime.pairing import DetectionError, PairConfig, Pairs, make_pairs, pair_priors
from defr.runtime.tensorrt_backend import TensorRTBackend


class ImageInputError(DefrError, ValueError):
    """An image the detector cannot read (wrong type, shape or value range)."""


@dataclass
class ImageResult:
    """Scored HOI triplets of one image, best first (K of them)."""

    boxes_h: torch.Tensor  # [K, 4] float, pixels of the original image, 0-based
    boxes_o: torch.Tensor  # [K, 4]
    hoi: torch.Tensor  # [K] long, class id
    scores: torch.Tensor  # [K] float
    object: torch.Tensor  # [K] long, HICO object of the pair
    image_logits: torch.Tensor  # [C] float, the unmasked whole-image logits
    pairs: Pairs | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.hoi.shape[0])

    def to_json(self) -> dict:
        """The results-format entry of this image: boxes_h, boxes_o, hoi, scores."""
        return {
            "boxes_h": self.boxes_h.tolist(),
            "boxes_o": self.boxes_o.tolist(),
            "hoi": self.hoi.tolist(),
            "scores": self.scores.tolist(),
        }


class HOIDetector:
    """Images + detections → ``ImageResult`` per image.

    Args:
        backend: a ``PairBackend`` (it places tensors on its own device).
        meta: preprocessing and classes; default ``backend.meta``.
        pairs: the pairing rules (``PairConfig``).
        top_k: keep at most that many triplets per image (None: all).
        min_score: keep triplets scoring above it.
        device: deprecated and ignored: the backend's device is where it computes.
    """

    def __init__(
        self,
        backend: PairBackend,
        meta: RuntimeMeta | None = None,
        pairs: PairConfig | None = None,
        device: str | torch.device | None = None,
        top_k: int | None = None,
        min_score: float = 0.0,
    ):
        if top_k is not None and top_k < 1:
            raise ConfigError(f"top_k must be >= 1 or None, not {top_k}")
        if device is not None:
            warnings.warn(
                "HOIDetector(device=...) is deprecated and ignored: pass the device to the backend "
                "(HOIDetector.from_checkpoint(path, device=...))",
                DeprecationWarning,
                stacklevel=2,
            )
        self.backend = backend
        self.meta = meta if meta is not None else backend.meta
        self.pairs = pairs or PairConfig()
        self.top_k = top_k
        self.min_score = min_score
        self.class_objects = torch.tensor(self.meta.class_objects, dtype=torch.long)
        self._mean = torch.tensor(self.meta.mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(self.meta.std, dtype=torch.float32).view(3, 1, 1)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str = "cpu", precision: str = "fp32", **kw
    ) -> HOIDetector:
        """From a DEFR checkpoint (``defr.model.save_checkpoint``) or the released ``.pth``."""
        return cls(TorchBackend(load_model(path), device=device, precision=precision), **kw)

    @classmethod
    def from_onnx(
        cls, path: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None, **kw
    ) -> HOIDetector:
        """From an exported ONNX model (``defr-export``) run by ONNX Runtime."""
        return cls(OnnxBackend(path, providers, threads), **kw)

    @classmethod
    def from_engine(cls, path: str | os.PathLike, device: str = "cuda", **kw) -> HOIDetector:
        """From a TensorRT engine built by ``defr-export``, run on CUDA ``device``."""
        return cls(TensorRTBackend(path, device=device), **kw)

    # --- inputs -----------------------------------------------------------------------------------------------

    def preprocess(self, image, name: str = "image") -> tuple[torch.Tensor, tuple[int, int]]:
        """A PIL image, an HxWx3 uint8 array or a [3, H, W] tensor (uint8, or float in [0, 1])
        → ([3, S, S] float32 normalised, (W, H) of the original)."""
        s = self.meta.image_size
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ImageInputError(
                    f"{name}: numpy images must be H×W×3 uint8, got shape {image.shape} {image.dtype}"
                )
            image = Image.fromarray(image)
        if isinstance(image, Image.Image):
            size = image.size
            if min(size) < 1:
                raise ImageInputError(f"{name}: empty image of size {size}")
            x = TF.pil_to_tensor(image.convert("RGB").resize((s, s), Image.BICUBIC)).float() / 255
        elif isinstance(image, torch.Tensor):
            if image.ndim != 3 or image.shape[0] != 3 or min(image.shape[1:]) < 1:
                raise ImageInputError(f"{name}: tensor images must be [3, H, W], got {list(image.shape)}")
            size = (int(image.shape[2]), int(image.shape[1]))
            x = image.detach().cpu()
            if x.dtype == torch.uint8:
                x = x.float() / 255
            elif x.is_floating_point():
                x = x.float()
                if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
                    raise ImageInputError(f"{name}: float tensor images must have values in [0, 1]")
            else:
                raise ImageInputError(f"{name}: tensor images must be uint8 or float, got {x.dtype}")
            x = TF.resize(x, [s, s], interpolation=TF.InterpolationMode.BICUBIC, antialias=True).clamp(0, 1)
        else:
            raise ImageInputError(
                f"{name}: expected a PIL image, an H×W×3 uint8 array or a [3, H, W] tensor, got {type(image).__name__}"
            )
        return (x - self._mean) / self._std, size

    def make_pairs(self, detections: dict, name: str = "image") -> Pairs:
        """Deprecated name of ``pair_detections``."""
        warnings.warn("HOIDetector.make_pairs is deprecated: use pair_detections", DeprecationWarning, stacklevel=2)
        return self.pair_detections(detections, name)

    def pair_detections(self, detections: dict, name: str = "image") -> Pairs:
        """{"boxes" [N, 4], "labels" [N] HICO objects, "scores" [N]} → ``Pairs`` (original pixels)."""
        if not isinstance(detections, dict):
            raise DetectionError(f"{name}: detections must be a dict with boxes, labels, scores")
        missing = [k for k in ("boxes", "labels", "scores") if k not in detections]
        if missing:
            raise DetectionError(f"{name}: detections lack {missing} (need boxes, labels, scores)")
        return make_pairs(detections["boxes"], detections["labels"], detections["scores"], self.pairs, name)

    # --- detection --------------------------------------------------------------------------------------------

    def detect(self, images, detections, names: list[str] | None = None) -> list[ImageResult]:
        """Score the HOIs of a batch of frames with one backend call.

        images: one image or a list (PIL, H×W×3 uint8 numpy, [3, H, W] tensor; any sizes);
        detections: one dict or a list, one per image, {"boxes" [N, 4] original pixels,
        "labels" [N] HICO objects 0..79, "scores" [N] in [0, 1]}; names: used in error messages.
        Returns one ``ImageResult`` per image: every (pair, class) whose prior is > 0 and whose
        score is > ``min_score``, best first (at most ``top_k``). Images with no pair get an empty
        result (and image logits).
        """
        if not isinstance(images, (list, tuple)):
            images, detections = [images], [detections]
        if isinstance(detections, dict) or len(detections) != len(images):
            n = 1 if isinstance(detections, dict) else len(detections)
            raise DetectionError(f"{len(images)} images but {n} detection dicts: pass one per image")
        names = names or [f"image {i}" for i in range(len(images))]
        if not images:
            return []
        batch, sizes, pairs = [], [], []
        for image, dets, name in zip(images, detections, names, strict=True):
            x, size = self.preprocess(image, name)
            batch.append(x)
            sizes.append(size)
            pairs.append(self.pair_detections(dets, name))
        pair_logits, image_logits = self._run(torch.stack(batch), pairs, sizes)
        results, start = [], 0
        for i, p in enumerate(pairs):
            results.append(self._score(p, pair_logits[start : start + len(p)], image_logits[i]))
            start += len(p)
        return results

    def _run(self, images: torch.Tensor, pairs: list[Pairs], sizes: list[tuple[int, int]]):
        """One backend call for the batch → (pair logits [P, C], image logits [B, C]) on the CPU."""
        s = self.meta.image_size
        scale = torch.tensor([[s / w, s / h, s / w, s / h] for w, h in sizes])  # original → S×S pixels
        counts = torch.tensor([len(p) for p in pairs])
        index = torch.repeat_interleave(torch.arange(len(pairs)), counts)
        boxes_h = torch.cat([p.boxes_h for p in pairs]) * scale[index]
        boxes_o = torch.cat([p.boxes_o for p in pairs]) * scale[index]
        total = int(counts.sum())
        boxes_h, boxes_o, index = with_dummy_pair(self.backend, s, boxes_h, boxes_o, index)
        pair_logits, image_logits = self.backend(images, boxes_h, boxes_o, index)
        c = len(self.meta.class_names)
        expected = (boxes_h.shape[0], c), (images.shape[0], c)
        if (tuple(pair_logits.shape), tuple(image_logits.shape)) != expected:
            raise BackendError(
                f"backend returned logits of shapes {list(pair_logits.shape)} and {list(image_logits.shape)}, "
                f"expected {list(expected[0])} and {list(expected[1])}"
            )
        return pair_logits[:total].float().cpu(), image_logits.float().cpu()

    def _score(self, pairs: Pairs, logits: torch.Tensor, image_logits: torch.Tensor) -> ImageResult:
        priors = pair_priors(pairs, self.class_objects, self.pairs.prior_exponent)  # [P, C]
        scores = torch.sigmoid(logits) * priors
        p, c = ((priors > 0) & (scores > self.min_score)).nonzero().unbind(1)
        s = scores[p, c]
        order = s.argsort(descending=True, stable=True)[: self.top_k]
        p, c = p[order], c[order]
        return ImageResult(
            boxes_h=pairs.boxes_h[p],
            boxes_o=pairs.boxes_o[p],
            hoi=c,
            scores=s[order],
            object=pairs.object_label[p],
            image_logits=image_logits,
            pairs=pairs,
        )


def load_detector(path: str | os.PathLike, device: str = "cpu", **kw) -> HOIDetector:
    """A detector from a model file, by suffix: ``.onnx`` (ONNX Runtime), ``.engine`` (TensorRT),
    anything else a checkpoint (ours or the released one). ``kw`` go to ``HOIDetector``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        providers = ["CPUExecutionProvider"] if torch.device(device).type == "cpu" else None
        return HOIDetector.from_onnx(path, providers=providers, **kw)
    if suffix == ".engine":
        return HOIDetector.from_engine(path, device=device, **kw)
    return HOIDetector.from_checkpoint(path, device=device, **kw)
