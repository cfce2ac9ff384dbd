"""Drawing primitives: shapes in scene units (human height 1, y up, ground at y = 0), placement in pixels, rendering."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

Colour = tuple[int, int, int]
Point = tuple[float, float]


@dataclass
class Shape:
    """Primitives of one entity in scene units: human height 1, y up, ground at y = 0.

    ``("line", points, width, colour)``, ``("ellipse", centre, (rx, ry), colour)``,
    ``("ring", centre, r, width, colour)``, ``("poly", points, colour)``.
    """

    prims: list = field(default_factory=list)

    def line(self, points, width: float, colour: Colour) -> Shape:
        self.prims.append(("line", [tuple(map(float, p)) for p in points], width, colour))
        return self

    def ellipse(self, centre, rx: float, ry: float, colour: Colour) -> Shape:
        self.prims.append(("ellipse", tuple(map(float, centre)), (rx, ry), colour))
        return self

    def ring(self, centre, r: float, width: float, colour: Colour) -> Shape:
        self.prims.append(("ring", tuple(map(float, centre)), r, width, colour))
        return self

    def poly(self, points, colour: Colour) -> Shape:
        self.prims.append(("poly", [tuple(map(float, p)) for p in points], colour))
        return self

    def map(self, fn: Callable[[Point], Point], scale: float = 1.0) -> Shape:
        """Points through ``fn`` (a translation or a uniform scaling by ``scale``), sizes times ``scale``."""
        out = Shape()
        for p in self.prims:
            if p[0] == "line":
                out.line([fn(q) for q in p[1]], p[2] * scale, p[3])
            elif p[0] == "ellipse":
                out.ellipse(fn(p[1]), p[2][0] * scale, p[2][1] * scale, p[3])
            elif p[0] == "ring":
                out.ring(fn(p[1]), p[2] * scale, p[3] * scale, p[4])
            else:
                out.poly([fn(q) for q in p[1]], p[2])
        return out

    def moved(self, dx: float, dy: float) -> Shape:
        return self.map(lambda p: (p[0] + dx, p[1] + dy))

    def bounds(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) including line widths and radii."""
        boxes = []
        for p in self.prims:
            if p[0] in ("line", "poly"):
                pad = p[2] / 2 if p[0] == "line" else 0.0
                xs, ys = zip(*p[1], strict=True)
                boxes.append((min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad))
            else:
                (cx, cy), (rx, ry) = p[1], (p[2] if p[0] == "ellipse" else (p[2] + p[3] / 2,) * 2)
                boxes.append((cx - rx, cy - ry, cx + rx, cy + ry))
        x0, y0, x1, y1 = zip(*boxes, strict=True)
        return min(x0), min(y0), max(x1), max(y1)

    def __add__(self, other: Shape) -> Shape:
        return Shape(self.prims + other.prims)


@dataclass(frozen=True)
class Placement:
    """Scene units → pixels: ``px = left + (x - x0)·s`` (mirrored: ``left + (x1 - x)·s``), ``py = top + (y1 - y)·s``."""

    scale: float
    left: float
    top: float
    x0: float
    x1: float
    y1: float
    mirror: bool

    def __call__(self, p: Point) -> Point:
        x = (self.x1 - p[0]) if self.mirror else (p[0] - self.x0)
        return self.left + x * self.scale, self.top + (self.y1 - p[1]) * self.scale

    def px(self, length: float) -> int:
        return max(1, round(length * self.scale))


def render(shape: Shape, size: tuple[int, int], place: Placement) -> Image.Image:
    """The entity alone on a transparent RGBA layer of the whole image."""
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for p in shape.prims:
        if p[0] == "line":
            draw.line([place(q) for q in p[1]], fill=p[3], width=place.px(p[2]), joint="curve")
        elif p[0] == "poly":
            draw.polygon([place(q) for q in p[1]], fill=p[2])
        else:
            (cx, cy), (rx, ry) = place(p[1]), (p[2] if p[0] == "ellipse" else (p[2], p[2]))
            box = [cx - rx * place.scale, cy - ry * place.scale, cx + rx * place.scale, cy + ry * place.scale]
            if p[0] == "ellipse":
                draw.ellipse(box, fill=p[3])
            else:
                draw.ellipse(box, outline=p[4], width=place.px(p[3]))
    return layer


def unit(deg: float) -> np.ndarray:
    return np.array([math.cos(math.radians(deg)), math.sin(math.radians(deg))])


def pick(rng: np.random.Generator, palette: list[Colour]) -> Colour:
    base = palette[rng.integers(len(palette))]
    return tuple(int(np.clip(c + rng.integers(-18, 19), 0, 255)) for c in base)


def shade(colour: Colour, f: float) -> Colour:
    return tuple(int(np.clip(c * f, 0, 255)) for c in colour)
