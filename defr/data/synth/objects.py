"""The object catalogue: each HICO object as a shape in scene units, with keypoints (seat, grip) for scenes."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from defr.data.synth.shapes import Shape, pick, shade

BIKE = [(200, 30, 30), (30, 60, 200), (30, 150, 60), (230, 200, 20), (240, 120, 20), (40, 40, 40)]
HORSE = [(120, 70, 30), (70, 40, 20), (160, 82, 45), (235, 230, 220), (30, 25, 25)]
GREY = [(130, 130, 135), (105, 100, 100), (160, 155, 150)]
WOOD = [(150, 100, 50), (110, 70, 35), (185, 140, 90)]
PLASTIC = [(240, 240, 240), (200, 40, 40), (40, 80, 200), (40, 160, 80)]
BALL = [(245, 245, 245), (240, 120, 20), (210, 40, 40), (240, 220, 40)]
BRIGHT = [(230, 30, 40), (250, 210, 20), (220, 40, 200), (20, 200, 220), (40, 200, 60)]
CUP = [(245, 245, 245), (210, 40, 40), (40, 80, 210), (240, 210, 40), (40, 170, 80)]
UMBRELLA = [(210, 30, 40), (30, 60, 200), (120, 40, 160), (25, 25, 30), (250, 200, 20), (240, 110, 180)]
DOG = [(210, 160, 80), (120, 70, 30), (30, 28, 28), (240, 235, 225), (140, 140, 140)]
CASE = [(25, 25, 30), (30, 40, 90), (190, 30, 40), (120, 120, 125), (40, 120, 70)]
BOARD = [(245, 245, 245), (250, 210, 30), (30, 200, 220), (245, 130, 30)]
MATTRESS = [(240, 240, 250), (200, 220, 255), (255, 215, 225)]

Keypoints = dict[str, np.ndarray]


def bicycle(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    frame, tyre, r = pick(rng, BIKE), (25, 25, 25), 0.17
    rear, front, crank = (-0.3, r), (0.3, r), (-0.02, r)
    seat, stem = (-0.12, 0.48), (0.22, 0.5)
    s = Shape().ring(rear, r, 0.035, tyre).ring(front, r, 0.035, tyre)
    s.line([rear, crank, seat, rear], 0.03, frame).line([crank, stem, front], 0.03, frame)
    s.line([(-0.2, 0.5), (-0.05, 0.5)], 0.035, (20, 20, 20)).line([stem, (0.2, 0.56), (0.3, 0.56)], 0.03, frame)
    return s, {"seat": np.array([-0.12, 0.52]), "grip": np.array([0.28, 0.57])}


def motorcycle(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    body, r = pick(rng, BIKE), 0.16
    s = Shape().ellipse((-0.32, r), r, r, (20, 20, 20)).ellipse((0.32, r), r, r, (20, 20, 20))
    s.ellipse((-0.32, r), 0.06, 0.06, (170, 170, 170)).ellipse((0.32, r), 0.06, 0.06, (170, 170, 170))
    s.poly([(-0.35, 0.3), (0.2, 0.3), (0.28, 0.45), (0.05, 0.5), (-0.3, 0.46)], body)
    s.line([(0.25, 0.35), (0.32, r), (0.22, 0.62)], 0.04, (60, 60, 60)).line(
        [(-0.28, 0.5), (0.0, 0.5)], 0.06, (20,) * 3
    )
    return s, {"seat": np.array([-0.15, 0.53]), "grip": np.array([0.22, 0.62])}


def horse(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    c = pick(rng, HORSE)
    s = Shape()
    for x in (-0.3, -0.22, 0.2, 0.28):
        s.line([(x, 0.55), (x + rng.uniform(-0.04, 0.04), 0.0)], 0.065, shade(c, 0.85))
    s.line([(-0.4, 0.68), (-0.52, 0.42)], 0.05, shade(c, 0.6))
    s.ellipse((0.0, 0.62), 0.42, 0.15, c).poly([(0.22, 0.62), (0.36, 0.74), (0.52, 0.98), (0.42, 1.0)], c)
    s.ellipse((0.53, 0.93), 0.12, 0.065, c).line([(0.36, 0.74), (0.46, 0.99)], 0.035, shade(c, 0.55))
    return s, {"seat": np.array([-0.04, 0.76]), "grip": np.array([0.32, 0.82])}


def elephant(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    c = pick(rng, GREY)
    s = Shape()
    for x in (-0.35, -0.22, 0.2, 0.33):
        s.line([(x, 0.6), (x, 0.0)], 0.14, shade(c, 0.85))
    s.ellipse((0.0, 0.78), 0.52, 0.3, c).ellipse((0.5, 0.88), 0.19, 0.19, c)
    s.line([(0.62, 0.82), (0.7, 0.5), (0.68, 0.22)], 0.08, c).ellipse((0.42, 0.86), 0.1, 0.15, shade(c, 0.75))
    return s, {"seat": np.array([0.0, 1.06]), "grip": np.array([0.38, 1.02])}


def chair(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    c = pick(rng, WOOD + PLASTIC)
    s = Shape().line([(-0.15, 0.27), (0.18, 0.27)], 0.05, c).line([(-0.15, 0.25), (-0.18, 0.66)], 0.045, c)
    s.line([(-0.14, 0.26), (-0.15, 0.0)], 0.035, c).line([(0.17, 0.26), (0.18, 0.0)], 0.035, c)
    return s, {"seat": np.array([0.0, 0.295])}


def bench(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    c = pick(rng, WOOD + [(40, 100, 50), (120, 120, 125)])
    s = Shape().line([(-0.46, 0.27), (0.46, 0.27)], 0.05, c)
    s.line([(-0.46, 0.44), (0.46, 0.44)], 0.04, c).line([(-0.46, 0.54), (0.46, 0.54)], 0.04, c)
    for x in (-0.4, 0.4):
        s.line([(x, 0.56), (x, 0.0)], 0.04, shade(c, 0.7))
    return s, {"seat": np.array([0.0, 0.295]), "top": np.array([0.0, 0.295])}


def bed(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    frame, sheet = pick(rng, WOOD), pick(rng, MATTRESS)
    s = Shape().poly([(-0.62, 0.1), (0.62, 0.1), (0.62, 0.24), (-0.62, 0.24)], frame)
    s.poly([(-0.6, 0.24), (0.6, 0.24), (0.6, 0.34), (-0.6, 0.34)], sheet)
    s.line([(-0.63, 0.0), (-0.63, 0.62)], 0.06, frame).line([(0.6, 0.0), (0.6, 0.3)], 0.05, frame)
    s.ellipse((-0.47, 0.38), 0.1, 0.045, (250, 250, 250))
    return s, {"top": np.array([0.0, 0.34])}


def sports_ball(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    r, c = rng.uniform(0.075, 0.1), pick(rng, BALL)
    s = Shape().ellipse((0.0, r), r, r, c).line([(-r * 0.7, r * 1.4), (r * 0.7, r * 0.6)], r * 0.25, shade(c, 0.5))
    return s, {"center": np.array([0.0, r]), "radius": np.array([r, r])}


def kite(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    c, tail = pick(rng, BRIGHT), pick(rng, BRIGHT)
    w, h = 0.13, 0.18
    s = Shape().poly([(0, h), (w, 0.04), (0, -h), (-w, 0.04)], c)
    s.line([(0, h), (0, -h)], 0.02, shade(c, 0.5)).line([(-w, 0.04), (w, 0.04)], 0.02, shade(c, 0.5))
    s.line([(0, -h), (0.05, -h - 0.1), (-0.04, -h - 0.2), (0.03, -h - 0.3)], 0.02, tail)
    return s, {"center": np.array([0.0, 0.0]), "bottom": np.array([0.0, -h])}


def cup(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    c = pick(rng, CUP)
    s = (
        Shape()
        .ring((-0.055, 0.0), 0.035, 0.02, shade(c, 0.8))
        .poly([(-0.05, 0.06), (0.05, 0.06), (0.04, -0.06), (-0.04, -0.06)], c)
    )
    return s, {"grip": np.array([-0.07, 0.0])}


def umbrella(rng: np.random.Generator, radius: float) -> Shape:
    """An open umbrella with its handle at the origin and the canopy above."""
    c, top = pick(rng, UMBRELLA), 0.17
    arc = [(radius * math.cos(t), top + radius * 0.75 * math.sin(t)) for t in np.linspace(0, math.pi, 13)]
    s = Shape().poly(arc, c).line([(0.0, top + radius * 0.75), (0.0, -0.04), (0.035, -0.07)], 0.025, (40, 40, 40))
    return s.line([(-radius, top), (radius, top)], 0.02, shade(c, 0.6))


def dog(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    c = pick(rng, DOG)
    s = Shape().line([(-0.17, 0.25), (-0.25, 0.36)], 0.035, c)
    for x in (-0.13, -0.09, 0.09, 0.13):
        s.line([(x, 0.18), (x, 0.0)], 0.04, shade(c, 0.8))
    s.ellipse((0.0, 0.2), 0.18, 0.075, c).ellipse((0.19, 0.3), 0.075, 0.07, c)
    s.ellipse((0.27, 0.28), 0.05, 0.03, shade(c, 0.8)).ellipse((0.16, 0.32), 0.025, 0.055, shade(c, 0.6))
    return s, {"back": np.array([-0.06, 0.27]), "collar": np.array([0.13, 0.27])}


def suitcase(rng: np.random.Generator, angle: float = 0.0) -> tuple[Shape, Keypoints]:
    """A suitcase on its side, bottom-left corner at the origin, rotated by ``angle`` degrees; ``end``: top-right."""
    c, t = pick(rng, CASE), math.radians(angle)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    corners = [rot @ p for p in ((0, 0), (0.34, 0), (0.34, 0.22), (0, 0.22))]
    handle = [rot @ p for p in ((0.12, 0.22), (0.12, 0.26), (0.22, 0.26), (0.22, 0.22))]
    s = Shape().poly(corners, c).line(handle, 0.025, shade(c, 0.5))
    return s.line([rot @ (0.02, 0.11), rot @ (0.32, 0.11)], 0.015, shade(c, 1.6)), {"end": corners[2]}


def surfboard(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    c = pick(rng, BOARD)
    s = Shape().ellipse((0.0, 0.045), 0.38, 0.045, c).line([(-0.3, 0.045), (0.3, 0.045)], 0.015, pick(rng, BRIGHT))
    return s, {}


def skateboard(rng: np.random.Generator, upside_down: bool = False) -> tuple[Shape, Keypoints]:
    deck, wheel = pick(rng, BRIGHT + [(30, 30, 30)]), (235, 235, 220)
    flip = -1.0 if upside_down else 1.0
    y = 0.065 if not upside_down else 0.0
    s = Shape().line([(-0.24, y + 0.025 * flip), (-0.2, y), (0.2, y), (0.24, y + 0.025 * flip)], 0.03, deck)
    for x in (-0.14, 0.14):
        s.ellipse((x, y - 0.035 * flip), 0.028, 0.028, wheel)
    return s, {}


OBJECTS: dict[str, Callable[[np.random.Generator], tuple[Shape, Keypoints]]] = {
    "bicycle": bicycle,
    "motorcycle": motorcycle,
    "horse": horse,
    "elephant": elephant,
    "chair": chair,
    "bench": bench,
    "bed": bed,
    "sports_ball": sports_ball,
    "kite": kite,
    "cup": cup,
    "dog": dog,
}
