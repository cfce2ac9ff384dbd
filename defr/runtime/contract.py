"""The pair runtime's contract, shared by every backend and by the exporter (a leaf: it imports
nothing else from ``defr.runtime`` or ``defr.export``).

One backend call scores a frame batch: ``images`` float32 [B, 3, S, S] (resized and normalised),
``boxes_h``, ``boxes_o`` float32 [P, 4] (x1, y1, x2, y2 in pixels of the S×S input) and
``pair_index`` int64 [P] (the image of each pair) → ``pair_logits`` float32 [P, C] and
``image_logits`` float32 [B, C] (the unmasked whole-image logits). Exported graphs and engines
use these names for their inputs and outputs and are built for P ≥ 1; a batch without pairs is
given one dummy whole-image pair (``with_dummy_pair``) whose output is discarded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

import torch

from defr import vocab
from defr.errors import ConfigError, DefrError

INPUT_NAMES = ("images", "boxes_h", "boxes_o", "pair_index")
OUTPUT_NAMES = ("pair_logits", "image_logits")
# The torch dtype of each of defr.choices.TORCH_PRECISIONS (a checkpoint's --precision).
PRECISION_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class BackendError(DefrError, RuntimeError):
    """A backend that cannot run (a runtime missing, a device it cannot use) or returned bad outputs."""


@dataclass
class RuntimeMeta:
    """What preprocessing and scoring need; also what an export sidecar records.

    image_size: S, the input side in pixels; patch_size: ViT patch side (G = S / patch_size);
    mean, std: per-channel normalisation of [0, 1] RGB; class_names: C "verb object" names;
    class_objects: [C] HICO object (0..79) of each class.
    """

    image_size: int
    patch_size: int
    mean: tuple
    std: tuple
    class_names: list[str]
    class_objects: list[int]

    def __post_init__(self) -> None:
        if len(self.class_objects) != len(self.class_names):
            raise ConfigError(f"{len(self.class_names)} class names but {len(self.class_objects)} class objects")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RuntimeMeta:
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)

    @classmethod
    def from_model(cls, model) -> RuntimeMeta:
        """From a ``defr.model.DEFR`` with a ViT backbone and "verb object" HICO class names."""
        spec = model.cfg.backbone
        return cls(
            image_size=spec.image_size,
            patch_size=model.vit.cfg.patch_size,
            mean=tuple(spec.mean),
            std=tuple(spec.std),
            class_names=list(model.cfg.class_names),
            class_objects=class_objects_from_names(model.cfg.class_names),
        )


def class_objects_from_names(class_names: list[str]) -> list[int]:
    """HICO object index of each "verb object" class name (``"ride bicycle"`` → bicycle's index)."""
    objects = {name: i for i, name in enumerate(vocab.hico().objects)}
    out = []
    for name in class_names:
        obj = name.rsplit(" ", 1)[-1]
        if obj not in objects:
            raise ConfigError(
                f"class {name!r}: object {obj!r} is not a HICO object; detection needs 'verb object' class names"
            )
        out.append(objects[obj])
    return out


class PairBackend(Protocol):
    """The seam every backend (PyTorch, ONNX Runtime, TensorRT) plugs into.

    name: ``torch``, ``onnxruntime``, ``tensorrt``; precision: ``fp32``, ``fp16``, ``bf16``;
    mask_mode: ``hard`` or ``released`` (``defr.model.pair_attention``; baked into exported
    files); meta: preprocessing and classes; accepts_no_pairs: whether a call with P = 0 is
    allowed (else the caller adds ``with_dummy_pair``); device: where the backend computes — it
    moves its inputs there itself, callers pass CPU tensors.
    """

    name: str
    precision: str
    mask_mode: str
    meta: RuntimeMeta
    accepts_no_pairs: bool
    device: torch.device

    def __call__(
        self, images: torch.Tensor, boxes_h: torch.Tensor, boxes_o: torch.Tensor, pair_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images: [B, 3, S, S] float32 normalised; boxes_h, boxes_o: [P, 4] pixels of the S×S input;
        pair_index: [P] int64 → (pair logits [P, C], image logits [B, C]), float32, any device."""
        ...


def with_dummy_pair(
    backend: PairBackend, image_size: int, boxes_h: torch.Tensor, boxes_o: torch.Tensor, pair_index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pair inputs a backend is called with: unchanged, or for P = 0 and a backend that does not
    accept it, one whole-image pair on image 0 (its logits are discarded by the caller)."""
    if pair_index.numel() or backend.accepts_no_pairs:
        return boxes_h, boxes_o, pair_index
    whole = torch.tensor([[0.0, 0.0, image_size, image_size]])
    return whole, whole.clone(), torch.zeros(1, dtype=torch.long)


def example_inputs(image_size: int, batch: int, pairs: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random call inputs for tests, verification and benchmarks (speed does not depend on values).

    images [B, 3, S, S] standard normal; boxes_h, boxes_o [P, 4] valid boxes (x2 > x1, y2 > y1)
    inside the S×S input; pair_index [P]: pair p belongs to image p·B // P (sorted, as even as
    possible). ``pairs`` is P, the total over the batch.
    """
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, image_size, image_size, generator=gen)
    corner = torch.rand(2, pairs, 2, generator=gen) * image_size * 0.7
    size = torch.rand(2, pairs, 2, generator=gen) * image_size * 0.3 + 1
    boxes = torch.cat([corner, corner + size], dim=2)  # [2, P, 4]
    pair_index = torch.arange(pairs) * batch // max(pairs, 1)
    return images, boxes[0], boxes[1], pair_index
