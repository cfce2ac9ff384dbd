"""Images in, one decoder and one preprocessing path out (a leaf: imports nothing else from ``defr``).

``decode_image`` is the one decoder of image files and bytes: ``detect``, calibration, data sets,
video image folders and requests all read pictures through it, so one file gives the same pixels
at every entry point. It decodes in full (a truncated file fails here, not halfway through a
run), applies the EXIF orientation (below), converts with ``to_rgb``, and turns every way a file
can fail (missing, not an image, truncated, a decompression bomb: more pixels than PIL's
``Image.MAX_IMAGE_PIXELS`` limit allows) into one ``ImageInputError`` naming it.

EXIF orientation is applied (``ImageOps.exif_transpose``), for files and for PIL images handed in:
a phone photo stored sideways with an orientation tag is used upright, as viewers show it and as
OpenCV-based detectors (ultralytics, mmdetection), detectron2 and Hugging Face pipelines read it,
so their boxes fit. ``torchvision.io.decode_image`` does not apply it unless
``apply_exif_orientation=True``; boxes from a detector that reads pixels that way are in the stored
(unrotated) frame: rotate the image first or decode it the same way. numpy arrays and tensors
carry no EXIF and are used as given.

Every input becomes an 8-bit RGB tensor [3, H, W] uint8 (``rgb_tensor``): PIL images of any mode
PIL opens, H×W×3 uint8 numpy arrays, [3, H, W] tensors (uint8, or float in [0, 1], rounded to
8 bits). Then ``resize_normalise`` does the same arithmetic for all of them, batched and on any
device: bicubic resize to S×S with antialiasing on the uint8 image (the aspect ratio is not kept;
torchvision's uint8 path, which rounds like PIL's ``Image.resize`` and is several times faster on
a CPU than resizing floats), then ``/255`` and the backbone's mean / std. So a picture given as a
PIL image, a numpy array or a tensor gives exactly the same model input.

PIL modes: ``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr`` convert to RGB; an alpha channel
(``RGBA``, ``LA``, ``PA``, a palette with transparency) is composited onto white; 16-bit grey
(``I;16*``, and ``I`` holding values in 0..65535) is scaled to 8 bits (÷ 257). ``F`` (32-bit
float, no defined range) and modes PIL cannot convert to RGB are refused by name.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

from defr.errors import DefrError

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
WHITE = (255, 255, 255)
ORIENTATION_TAG = 0x0112  # EXIF "Orientation": 1 upright, 2-8 mirrored and / or turned


class ImageInputError(DefrError, ValueError):
    """An image that cannot be used (wrong type, shape, mode or value range); the message names it."""


def decode_image(
    source: str | os.PathLike | bytes,
    name: str | None = None,
    formats: Sequence[str] | None = None,
    max_pixels: int | None = None,
    check_size: Callable[[int, int], None] | None = None,
) -> Image.Image:
    """An image file (a path) or its bytes → a decoded RGB PIL image (8 bits a channel), upright.

    name: what messages call the image (default: the path, or "image bytes"). formats: the PIL
    formats accepted (None: any PIL reads; a server takes ``("PNG", "JPEG")``). max_pixels: a
    stricter limit than PIL's, checked from the header before decoding (a small file can claim a
    huge image). check_size: called with (width, height) from the header before decoding, for limits of
    the caller's own (a request's pixel budget); the ImageInputError it raises is passed on. Raises
    ImageInputError naming the image for a missing or unreadable file, a file
    that is not an image (of ``formats``) or is cut short, a decompression bomb, too many pixels,
    or a mode ``to_rgb`` refuses.
    """
    is_bytes = isinstance(source, (bytes, bytearray, memoryview))
    name = name or ("image bytes" if is_bytes else str(source))
    try:
        opened = Image.open(io.BytesIO(bytes(source)) if is_bytes else Path(source), formats=formats)
        with opened as image:
            w, h = image.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageInputError(f"{name}: {w}×{h} pixels, more than the {max_pixels} allowed (max_pixels)")
            if check_size is not None:
                check_size(w, h)
            return to_rgb(image, name)
    except ImageInputError:
        raise
    except FileNotFoundError:
        raise ImageInputError(f"{name}: no such image file") from None
    except IsADirectoryError:
        raise ImageInputError(f"{name}: is a folder, not an image file") from None
    except Image.DecompressionBombError as e:
        claimed = re.search(r"\((\d+) pixels\)", str(e))
        if max_pixels is not None and claimed:  # a server's caller cannot raise PIL's limit: name the one it meets
            raise ImageInputError(
                f"{name}: {claimed[1]} pixels, more than the {max_pixels} allowed (max_pixels)"
            ) from None
        raise ImageInputError(
            f"{name}: refused as a decompression bomb ({e}); shrink the image, or raise PIL's "
            "Image.MAX_IMAGE_PIXELS if it is genuine"
        ) from None
    except UnidentifiedImageError:
        if formats:
            raise ImageInputError(f"{name}: not a {' or '.join(formats)} image") from None
        raise ImageInputError(f"{name}: cannot read image (not an image file PIL can read)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageInputError(f"{name}: cannot read image ({type(e).__name__}: {e})") from None


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """A PIL image of any supported mode → mode RGB, EXIF orientation applied (module docstring);
    ImageInputError otherwise (also for a closed image)."""
    if min(image.size) < 1:
        raise ImageInputError(f"{name}: empty image of size {image.size}")
    try:
        image.load()  # a lazily opened file must be read now: the caller may close it
    except ValueError as e:
        if "closed" not in str(e):
            raise
        raise ImageInputError(
            f"{name}: the PIL image is closed ({e}); pass it while open, or call .load() or .copy() before closing"
        ) from None
    image = _upright(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(image, name)
    if mode == "F":
        raise ImageInputError(
            f"{name}: mode F (32-bit float) images have no defined value range; save it as 8- or 16-bit first"
        )
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ALPHA_MODES:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as e:
        raise ImageInputError(f"{name}: PIL cannot convert mode {mode} to RGB ({e})") from None


def _upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation tag says (itself when there is no tag or it is 1)."""
    if image.getexif().get(ORIENTATION_TAG, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


def _sixteen_bit_to_rgb(image: Image.Image, name: str) -> Image.Image:
    values = np.asarray(image, dtype=np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ImageInputError(
            f"{name}: mode {image.mode} values in [{values.min()}, {values.max()}] are not 16-bit (0..65535)"
        )
    grey = np.round(values / 257.0).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def rgb_tensor(image, name: str = "image") -> torch.Tensor:
    """Any supported image → [3, H, W] uint8 RGB tensor (float inputs in [0, 1] rounded to 8 bits).

    Tensors stay on their device (a GPU frame is resized there). Raises ImageInputError naming
    ``name`` for anything else.
    """
    if isinstance(image, Image.Image):
        rgb = np.asarray(to_rgb(image, name), dtype=np.uint8)
        return torch.from_numpy(rgb.copy()).permute(2, 0, 1)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ImageInputError(
                f"{name}: numpy images must be H×W×3 uint8 (RGB), got shape {image.shape} {image.dtype}"
            )
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        _check_size(x, name)
        return x
    if isinstance(image, torch.Tensor):
        x = image.detach()
        if x.ndim != 3 or x.shape[0] != 3:
            raise ImageInputError(f"{name}: tensor images must be [3, H, W], got {list(x.shape)}")
        _check_size(x, name)
        if x.dtype == torch.uint8:
            return x
        if not x.is_floating_point():
            raise ImageInputError(f"{name}: tensor images must be uint8 or float, got {x.dtype}")
        x = x.float()
        if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise ImageInputError(f"{name}: float tensor images must have finite values in [0, 1]")
        return (x * 255).round().to(torch.uint8)
    raise ImageInputError(
        f"{name}: expected a PIL image, an H×W×3 uint8 array or a [3, H, W] tensor, got {type(image).__name__}"
    )


def _check_size(x: torch.Tensor, name: str) -> None:
    if min(x.shape[-2:]) < 1:
        raise ImageInputError(f"{name}: empty image of size {tuple(x.shape[-2:])}")


def resize_normalise(
    images: Sequence[torch.Tensor] | torch.Tensor,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """uint8 RGB tensors ([3, H, W] each, or a batch [N, 3, H, W]; ``rgb_tensor``) → [N, 3, S, S]
    float32 normalised model input on ``device`` (default: where the images are).

    Images of the same size are resized together in one call; the result does not depend on the
    grouping (interpolation is per image).
    """
    frames = list(images.unbind(0)) if isinstance(images, torch.Tensor) else list(images)
    if not frames:
        return torch.zeros(0, 3, image_size, image_size, device=device)
    device = torch.device(device) if device is not None else frames[0].device
    out = torch.empty(len(frames), 3, image_size, image_size, device=device)
    groups: dict[tuple, list[int]] = {}
    for i, frame in enumerate(frames):
        if frame.dtype != torch.uint8:
            raise ImageInputError(f"image {i}: resize_normalise takes uint8 tensors (rgb_tensor), got {frame.dtype}")
        groups.setdefault(tuple(frame.shape), []).append(i)
    mean_t = 255 * torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std_t = 255 * torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    size = [image_size, image_size]
    for index in groups.values():
        x = torch.stack([frames[i] for i in index]).to(device)
        x = TF.resize(x, size, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)  # uint8 in, uint8 out
        out[index] = (x.float() - mean_t) / std_t
    return out
