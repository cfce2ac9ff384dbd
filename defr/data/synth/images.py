"""Still images: pairs placed in cells over a cluttered noisy background, with their pixel boxes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from defr.data.synth.classes import CLASSES
from defr.data.synth.figure import random_look
from defr.data.synth.scenes import SCENES
from defr.data.synth.settings import SETTINGS, SceneSetting
from defr.data.synth.shapes import Placement, Shape, render


@dataclass
class Annotation:
    """One image: its pixel size, classes and per pair [x0, y0, x1, y1] 0-based inclusive pixel boxes."""

    size: tuple[int, int]
    classes: list[int]
    boxes_h: list[list[int]]
    boxes_o: list[list[int]]


def draw_image(
    rng: np.random.Generator, classes: list[int], size: int, setting: SceneSetting = SETTINGS["default"]
) -> tuple[Image.Image, Annotation]:
    """An image holding one pair per class in ``classes`` (1-4), over a cluttered noisy background.

    setting: the layout (``defr.data.synth.settings``): separate cells, or one row of overlapping columns.
    """
    width, height = _image_size(rng, size)
    image = background(rng, width, height)
    ann = Annotation((width, height), list(classes), [], [])
    if setting.layout == "row":
        cells = row_cells(len(classes), width, height, setting.overlap)
    else:
        cells = _cells(rng, len(classes), width, height)
    for cls, cell in zip(classes, cells, strict=True):
        verb, obj = CLASSES[cls]
        pair = SCENES[verb](rng, random_look(rng), obj)
        place = placement(rng, pair.human + pair.obj + pair.extra, cell)
        layers = {
            name: render(shape, (width, height), place)
            for name, shape in vars(pair).items()
            if name != "human_in_front"
        }
        order = ("obj", "human") if pair.human_in_front else ("human", "obj")
        for name in (*order, "extra"):
            image.alpha_composite(layers[name])
        ann.boxes_h.append(drawn_box(layers["human"]))
        ann.boxes_o.append(drawn_box(layers["obj"]))
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    pixels += rng.normal(0.0, rng.uniform(2.0, 7.0), pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), ann


def _image_size(rng: np.random.Generator, size: int) -> tuple[int, int]:
    """The long side is ``size``, the short one 75-100 % of it; a third of the images are portrait."""
    short = int(round(size * rng.uniform(0.75, 1.0)))
    return (short, size) if rng.random() < 1 / 3 else (size, short)


def background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A vertical gradient between two muted colours with low-contrast clutter shapes."""
    top, bottom = rng.integers(80, 210, 3), rng.integers(70, 200, 3)
    t = np.linspace(0.0, 1.0, height)[:, None, None]
    pixels = np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3)).astype(np.uint8)
    image = Image.fromarray(pixels).convert("RGBA")
    clutter = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(clutter)
    for _ in range(rng.integers(5, 13)):
        base = top if rng.random() < 0.5 else bottom
        fill = (*(int(np.clip(c + rng.integers(-60, 61), 0, 255)) for c in base), int(rng.integers(90, 200)))
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.03, 0.2) * width, rng.uniform(0.03, 0.2) * height
        kind = rng.integers(3)
        if kind == 0:
            draw.rectangle([x, y, x + w, y + h], fill=fill)
        elif kind == 1:
            draw.ellipse([x, y, x + w, y + h], fill=fill)
        else:
            draw.line([x, y, x + w * rng.choice([-1, 1]), y + h], fill=fill, width=int(rng.integers(1, 3)))
    image.alpha_composite(clutter)
    return image


def _cells(rng: np.random.Generator, n: int, width: int, height: int) -> list[tuple[float, float, float, float]]:
    """Non-overlapping (left, top, width, height) regions, one per pair: whole image, two halves or a 2 × 2 grid."""
    if n == 1:
        return [(0.0, 0.0, width, height)]
    if n == 2:
        if height > width:
            return [(0.0, 0.0, width, height / 2), (0.0, height / 2, width, height / 2)]
        return [(0.0, 0.0, width / 2, height), (width / 2, 0.0, width / 2, height)]
    grid = [(c * width / 2, r * height / 2, width / 2, height / 2) for r in range(2) for c in range(2)]
    return [grid[i] for i in rng.permutation(4)[:n]]


def row_cells(n: int, width: float, height: float, overlap: float) -> list[tuple[float, float, float, float]]:
    """``n`` columns side by side over the whole height, each widened by ``overlap`` of a column into its
    neighbours (clamped to the image), left to right."""
    step = width / n
    cells = []
    for i in range(n):
        left, right = max(0.0, (i - overlap) * step), min(float(width), (i + 1 + overlap) * step)
        cells.append((left, 0.0, right - left, float(height)))
    return cells


def placement(rng: np.random.Generator, scene: Shape, cell: tuple[float, float, float, float]) -> Placement:
    """Scale the pair to 70-100 % of the largest size that fits the cell, at a random spot in it, maybe mirrored."""
    x0, y0, x1, y1 = scene.bounds()
    left, top, w, h = cell
    scale = min(0.94 * w / (x1 - x0), 0.94 * h / (y1 - y0)) * rng.uniform(0.7, 1.0)
    left += rng.uniform(0, w - (x1 - x0) * scale)
    top += rng.uniform(0, h - (y1 - y0) * scale)
    return Placement(scale, left, top, x0, x1, y1, mirror=bool(rng.random() < 0.5))


def drawn_box(layer: Image.Image) -> list[int]:
    """[x0, y0, x1, y1], 0-based inclusive, of the layer's drawn pixels."""
    box = layer.getchannel("A").getbbox()
    if box is None:
        raise RuntimeError("an entity was drawn entirely outside its image")  # _placement keeps pairs inside
    return [box[0], box[1], box[2] - 1, box[3] - 1]
