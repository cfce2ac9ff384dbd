"""Image transforms: the whole image resized to S × S (aspect not kept), and the paper's training augmentation.

Evaluation uses ``defr.images.resize_normalise``, the same arithmetic as the detection runtime,
so classification scores and image logits of ``HOIDetector`` agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torchvision import transforms as T

from defr.errors import ConfigError
from defr.images import resize_normalise, rgb_tensor

BICUBIC = T.InterpolationMode.BICUBIC


def eval_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image → [3, S, S] float32: bicubic (antialiased) resize of the whole image, then normalise."""

    def transform(image: Image.Image) -> torch.Tensor:
        return resize_normalise([rgb_tensor(image)], image_size, mean, std)[0]

    return transform


def train_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image → [3, S, S] float32 with the paper's augmentation.

    Random resized crop (scale 0.7-1, ratio 0.7-1.3, bicubic), horizontal flip, colour jitter
    (brightness and contrast 0.4). Cropping first makes the jitter run on S × S pixels, not the
    full image; brightness is per pixel and contrast uses the mean grey level, so the order
    barely matters. Flips keep
    the labels: HOI classes are not left/right specific.
    """
    return T.Compose(
        [
            T.RandomResizedCrop(image_size, scale=(0.7, 1.0), ratio=(0.7, 1.3), interpolation=BICUBIC),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=0.4, contrast=0.4),
            *_to_normalised(mean, std),
        ]
    )


def build_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float], augment: bool = False
) -> Callable[[Image.Image], torch.Tensor]:
    if image_size < 1:
        raise ConfigError(f"image_size must be >= 1, got {image_size}")
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ConfigError(f"mean and std need 3 values each, std > 0; got mean={mean}, std={std}")
    return (train_transform if augment else eval_transform)(image_size, mean, std)


def _to_normalised(mean: Sequence[float], std: Sequence[float]) -> list:
    return [T.ToTensor(), T.Normalize(tuple(mean), tuple(std))]
