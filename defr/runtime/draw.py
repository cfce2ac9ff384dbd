"""Pictures of HOI detections: the top triplets' human and object boxes with their labels and scores."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from defr.files import atomic_path
from defr.runtime.detector import ImageResult

HUMAN_COLOUR = (40, 120, 255)
OBJECT_COLOUR = (255, 140, 0)


MIN_SIDE = 512  # small frames are enlarged so that boxes and labels stay legible
LINE = 14  # pixels per label line of the default font


def draw_results(image: Image.Image, result: ImageResult, class_names: Sequence[str], top: int = 3) -> Image.Image:
    """``image`` with the ``top`` best triplets: human box (blue), object box (orange), a line between
    them and the triplet's number; below the image, one line "number. class score" per triplet.
    Boxes: original-image pixels. Images smaller than 512 px are enlarged first."""
    scale = max(1.0, MIN_SIDE / max(image.size))
    size = (round(image.width * scale), round(image.height * scale))
    shown = min(top, len(result))
    canvas = Image.new("RGB", (size[0], size[1] + LINE * max(shown, 1) + 6), (255, 255, 255))
    canvas.paste(image.convert("RGB").resize(size, Image.BICUBIC))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    width = max(2, round(max(size) / 250))
    for k in range(shown):
        bh = [v * scale for v in result.boxes_h[k].tolist()]
        bo = [v * scale for v in result.boxes_o[k].tolist()]
        draw.rectangle(bo, outline=OBJECT_COLOUR, width=width)
        draw.rectangle(bh, outline=HUMAN_COLOUR, width=width)
        draw.line([_centre(bh), _centre(bo)], fill=(255, 255, 255), width=width)
        draw.text((bh[0] + width + 1, bh[1] + width + 1 + LINE * k), str(k + 1), fill=HUMAN_COLOUR, font=font)
        label = f"{k + 1}. {class_names[int(result.hoi[k])]}  {float(result.scores[k]):.3f}"
        draw.text((4, size[1] + 3 + LINE * k), label, fill=(0, 0, 0), font=font)
    if not shown:
        draw.text((4, size[1] + 3), "no HOI detected", fill=(0, 0, 0), font=font)
    return canvas


def _centre(box: list[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def save_result_images(
    images: Sequence[Image.Image],
    results: Sequence[ImageResult],
    class_names: Sequence[str],
    out_dir: str | os.PathLike,
    names: Sequence[str] | None = None,
    prefix: str = "detections_",
    top: int = 3,
) -> list[Path]:
    """Draw each result on its image and save ``out_dir/{prefix}{name}.png`` (atomically) → the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = names or [str(i) for i in range(len(images))]
    paths = []
    for image, result, name in zip(images, results, names, strict=True):
        path = out_dir / f"{prefix}{Path(name).stem}.png"
        with atomic_path(path) as tmp:
            draw_results(image, result, class_names, top).save(tmp, format="PNG")
        paths.append(path)
    return paths
