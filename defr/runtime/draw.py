"""Pictures of HOI detections: the top triplets' human and object boxes with their labels and scores."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from defr.runtime.detector import ImageResult

HUMAN_COLOUR = (40, 120, 255)
OBJECT_COLOUR = (255, 140, 0)


def draw_results(image: Image.Image, result: ImageResult, class_names: Sequence[str], top: int = 3) -> Image.Image:
    """A copy of ``image`` with the ``top`` best triplets: human box (blue), object box (orange),
    joined by a line, and "class score" above the human box. Boxes: original-image pixels."""
    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    width = max(1, round(max(canvas.size) / 200))
    for k in range(min(top, len(result))):
        bh, bo = result.boxes_h[k].tolist(), result.boxes_o[k].tolist()
        draw.rectangle(bo, outline=OBJECT_COLOUR, width=width)
        draw.rectangle(bh, outline=HUMAN_COLOUR, width=width)
        draw.line([_centre(bh), _centre(bo)], fill=(255, 255, 255), width=width)
        label = f"{class_names[int(result.hoi[k])]} {float(result.scores[k]):.2f}"
        x, y = bh[0], max(bh[1] - 12 * (k + 1), 0)  # stack labels of the same human upwards
        left, top_, right, bottom = draw.textbbox((x, y), label, font=font)
        draw.rectangle([left - 1, top_ - 1, right + 1, bottom + 1], fill=HUMAN_COLOUR)
        draw.text((x, y), label, fill=(255, 255, 255), font=font)
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
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            draw_results(image, result, class_names, top).save(tmp, format="PNG")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        paths.append(path)
    return paths
