"""``HOIDetector``: images + object detections → scored HOI triplets, over a pluggable pair backend.

A frame batch goes through ONE backend call: every image resized to S×S (bicubic with
antialiasing, aspect not kept) and normalised on the backend's device (``defr.images``: one path
for PIL, numpy and tensor frames); the pairs of all images concatenated with ``pair_index``. The backend
returns pair logits [P, C] and image logits [B, C]; the score of class c for a pair is
``sigmoid(logit) · prior`` (``defr.runtime.pairing.pair_priors``).

Frames without pairs still get image logits. When a whole batch has no pair, backends that do
not accept P = 0 (exported graphs and engines) get one dummy whole-image pair whose output is
discarded (``defr.runtime.contract.with_dummy_pair``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from defr.choices import FILE_PRECISION, MaskMode, PrecisionRequest
from defr.detections import DEFAULT_LABEL_SPACE, DetectionError, Detections, as_detections, check_label_space
from defr.errors import ConfigError
from defr.images import ImageInputError, resize_normalise, rgb_tensor
from defr.runtime.contract import BackendError, PairBackend, RuntimeMeta, with_dummy_pair
from defr.runtime.onnx_session import SessionConfig
from defr.runtime.openvino_backend import OpenVinoConfig
from defr.runtime.pairing import PairConfig, Pairs, make_pairs, pair_priors
from defr.runtime.registry import MODEL_OPTION_NAMES, ModelOptions, load_backend


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
    pair: torch.Tensor | None = field(default=None, repr=False)  # [K] long, each triplet's row in ``pairs``

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

    The backend's device is where it computes (``HOIDetector.open(path, device=...)``).
    """

    def __init__(
        self,
        backend: PairBackend,
        meta: RuntimeMeta | None = None,
        pairs: PairConfig | None = None,
        top_k: int | None = None,
        min_score: float = 0.0,
    ):
        if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
            raise ConfigError(f"top_k must be a whole number >= 1 or None, not {top_k!r}")
        if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not 0.0 <= min_score <= 1.0:
            raise ConfigError(f"min_score must be a number in [0, 1], not {min_score!r}")
        self.backend = backend
        self.meta = meta if meta is not None else backend.meta
        self.pairs = pairs or PairConfig()
        self.top_k = top_k
        self.min_score = min_score
        self.class_objects = torch.tensor(self.meta.class_objects, dtype=torch.long)

    @classmethod
    def open(cls, path: str | os.PathLike, options: ModelOptions | None = None, **kw) -> HOIDetector:
        """A detector from any model file, for any runtime and precision, through the front door
        (``defr.runtime.registry.load_backend``).

        options: ``ModelOptions`` (runtime, precision, mask_mode, device, ...); ``kw``: its field names
        (they replace its values) and ``HOIDetector``'s own (``pairs``, ``top_k``, ``min_score``, ``meta``).
        """
        fields = {k: kw.pop(k) for k in list(kw) if k in MODEL_OPTION_NAMES}
        return cls(load_backend(path, options, **fields), **kw)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "cpu", **kw) -> HOIDetector:
        """From a DEFR checkpoint (``defr.model.save_checkpoint``) or the released ``.pth``, in PyTorch:
        ``open`` with ``runtime="torch"`` (precision, mask_mode, attention, image_size in ``kw``)."""
        return cls.open(path, runtime="torch", device=device, **kw)

    @classmethod
    def from_onnx(
        cls,
        path: str | os.PathLike,
        providers: list[str] | None = None,
        threads: int | None = None,
        mask_mode: MaskMode | None = None,
        session: SessionConfig | None = None,
        runtime: str = "onnxruntime",
        precision: PrecisionRequest = FILE_PRECISION,
        openvino: OpenVinoConfig | None = None,
        **kw,
    ) -> HOIDetector:
        """From an exported ONNX model (``defr-export``: ``model.onnx``, ``model.fp16.onnx`` or
        ``model.int8.onnx``): ``open`` with these ``ModelOptions``. runtime: ``onnxruntime`` or ``openvino``
        (another file kind is refused); providers and session: ONNX Runtime's; openvino: OpenVINO's
        ``OpenVinoConfig``."""
        options = ModelOptions(runtime, precision, mask_mode, threads=threads, providers=providers, session=session,
                               openvino=openvino)  # fmt: skip
        return cls.open(path, options, **kw)

    @classmethod
    def from_engine(cls, path: str | os.PathLike, device: str = "cuda", **kw) -> HOIDetector:
        """From a TensorRT engine built by ``defr-export``, on CUDA ``device``: ``open`` with ``runtime="tensorrt"``."""
        return cls.open(path, runtime="tensorrt", device=device, **kw)

    # --- inputs -----------------------------------------------------------------------------------------------

    def preprocess(self, image, name: str = "image") -> tuple[torch.Tensor, tuple[int, int]]:
        """One image (PIL of any mode, H×W×3 uint8 RGB numpy, [3, H, W] uint8 or [0, 1] float tensor)
        → ([3, S, S] float32 normalised, (W, H) of the original). The same path as ``detect``; other
        arrays (H×W grey, float, other channel counts) raise ``ImageInputError``: convert them first."""
        x = rgb_tensor(image, name)
        return self._model_input([x])[0], (int(x.shape[2]), int(x.shape[1]))

    def _model_input(self, frames: list[torch.Tensor]) -> torch.Tensor:
        """[3, H, W] RGB tensors → [B, 3, S, S] on the backend's device: resized there, in one batch per size."""
        m = self.meta
        return resize_normalise(frames, m.image_size, m.mean, m.std, device=self.backend.device)

    def pair_detections(
        self, detections: Detections | dict, name: str = "image", label_space: str = DEFAULT_LABEL_SPACE
    ) -> Pairs:
        """A ``Detections`` or a dict {"boxes" [N, 4], "labels" [N], "scores" [N]} with labels in
        ``label_space`` → ``Pairs`` (original pixels)."""
        return make_pairs(as_detections(detections, label_space, name), self.pairs)

    # --- detection --------------------------------------------------------------------------------------------

    def detect(
        self, images, detections, names: list[str] | None = None, label_space: str = DEFAULT_LABEL_SPACE
    ) -> list[ImageResult]:
        """Score the HOIs of a batch of frames with one backend call.

        Args:
            images: one image or a list (PIL, H×W×3 uint8 numpy, [3, H, W] tensor; any sizes).
            detections: one per image, a ``defr.detections.Detections`` or a dict {"boxes" [N, 4] pixels
                of the image, "labels" [N], "scores" [N] in [0, 1]}; one alone, or a list.
            names: one per image, used in error messages.
            label_space: the labels of dict detections (``hico``, ``coco80``, ``coco91``).

        Returns:
            One ``ImageResult`` per image: every (pair, class) whose prior is > 0 and whose score is
            > ``min_score``, best first (at most ``top_k``). Images with no pair get an empty result
            (and image logits).

        Raises:
            ImageInputError / DetectionError: naming the image (detections are checked against the
            decoded image's size: ``Detections.check_bounds``). ConfigError: ``names`` of the wrong
            length, an unknown label space. BackendError: the backend fails or returns logits of the
            wrong shape or non-finite values.
        """
        if not isinstance(images, (list, tuple)):
            if isinstance(detections, (list, tuple)):
                raise DetectionError(
                    f"detect got one image ({type(images).__name__}) and a list of {len(detections)} detection "
                    "entries: pass one image with one detections dict, or a list of images with a list of dicts"
                )
            images, detections = [images], [detections]
        if not isinstance(detections, (list, tuple)):
            raise DetectionError(
                f"a list of {len(images)} images needs a list of detections, one per image, "
                f"not a {type(detections).__name__}"
            )
        if len(detections) != len(images):
            raise DetectionError(f"{len(images)} images but {len(detections)} detection entries: pass one per image")
        names = _names(names, len(images))
        check_label_space(label_space)
        detections = [as_detections(d, label_space, name) for d, name in zip(detections, names, strict=True)]
        if not images:
            return []
        inputs, sizes = self.prepare(images, names)
        return self.detect_prepared(inputs, sizes, detections, names)

    def prepare(self, images, names: list[str] | None = None) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Frames (any type ``detect`` takes) → (model input [B, 3, S, S] on the backend's device,
        (W, H) of each original). Frames of one size are resized together, on that device."""
        names = _names(names, len(images))
        frames = [rgb_tensor(image, name) for image, name in zip(images, names, strict=True)]
        sizes = [(int(x.shape[2]), int(x.shape[1])) for x in frames]
        return self._model_input(frames), sizes

    def detect_prepared(
        self,
        inputs: torch.Tensor,
        sizes: list[tuple[int, int]],
        detections: list[Detections | dict],
        names: list[str] | None = None,
        label_space: str = DEFAULT_LABEL_SPACE,
    ) -> list[ImageResult]:
        """``detect`` after ``prepare``: inputs [B, 3, S, S] and the original (W, H) of each frame,
        one ``Detections`` (or dict in ``label_space``) per frame, boxes in the frame's pixels and
        within its bounds (``Detections.check_bounds``). For pipelines that prepare frames in a stage of
        their own (``defr.video``)."""
        s = self.meta.image_size
        if inputs.ndim != 4 or tuple(inputs.shape[1:]) != (3, s, s):
            raise ImageInputError(f"prepared inputs must be [B, 3, {s}, {s}], got {list(inputs.shape)}")
        if not len(sizes) == len(detections) == inputs.shape[0]:
            raise DetectionError(
                f"{inputs.shape[0]} inputs, {len(sizes)} sizes and {len(detections)} detection entries"
            )
        names = _names(names, len(sizes))
        pairs = []
        for d, (width, height), name in zip(detections, sizes, names, strict=True):
            dets = as_detections(d, label_space, name)
            dets.check_bounds(width, height, name=name)
            pairs.append(make_pairs(dets, self.pairs))
        pair_logits, image_logits = self._run(inputs, pairs, list(sizes), names)
        results, start = [], 0
        for i, p in enumerate(pairs):
            results.append(self._score(p, pair_logits[start : start + len(p)], image_logits[i]))
            start += len(p)
        return results

    def _run(self, images: torch.Tensor, pairs: list[Pairs], sizes: list[tuple[int, int]], names: list[str]):
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
        pair_logits, image_logits = pair_logits[:total].float().cpu(), image_logits.float().cpu()
        bad = ~(torch.isfinite(image_logits).all(1) & _finite_per_image(pair_logits, counts))
        if bad.any():
            which = [names[i] for i in bad.nonzero().flatten().tolist()]
            raise BackendError(
                f"the {self.backend.name} backend returned NaN or inf logits for {', '.join(which[:5])}"
                + (" ..." if len(which) > 5 else "")
                + " (non-finite weights or an overflow in reduced precision)"
            )
        return pair_logits, image_logits

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
            pair=p,
        )


def _names(names: list[str] | None, n: int) -> list[str]:
    """``names`` (one per image; ConfigError otherwise), or ``image 0``, ``image 1``, ..."""
    if names is None:
        return [f"image {i}" for i in range(n)]
    if isinstance(names, str) or len(names) != n:
        given = "a string" if isinstance(names, str) else f"{len(names)} names"
        raise ConfigError(f"names must be a list with one name per image: {given} for {n} image(s)")
    return [str(x) for x in names]


def _finite_per_image(pair_logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """[B] bool: every logit of the image's pairs is finite. pair_logits: [P, C]; counts: [B] pairs per image."""
    index = torch.repeat_interleave(torch.arange(len(counts)), counts)
    bad_rows = ~torch.isfinite(pair_logits).all(1)
    return torch.bincount(index[bad_rows], minlength=len(counts)) == 0


def load_detector(path: str | os.PathLike, options: ModelOptions | None = None, **kw) -> HOIDetector:
    """``HOIDetector.open``: a detector from any model file through the front door (``load_backend``)."""
    return HOIDetector.open(path, options, **kw)
