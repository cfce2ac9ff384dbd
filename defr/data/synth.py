"""A synthetic HOI data set in HICO's and HICO-DET's official layouts, learnable by a tiny ViT on a CPU.

Every image holds 1-4 human-object pairs. Humans are stick figures (head, torso, arms, legs) whose
pose and position relative to the object express the verb: a rider sits on top of a horse with
legs around it, a kicker's leg reaches a ball at foot level, a kite flier's string runs from a
raised hand to a kite high above, a person with no interaction stands apart with arms down.
Objects are drawn by shape and colour (palettes per object), with random sizes, mirror images,
background clutter and noise. Classes are real HICO (verb, object) classes with power-law train
frequencies and a pinned tail: a few classes have exactly one training image, several ≤ 5 or ≤ 10.

Output (``OUT``): ``anno.mat`` (HICO classification: list_action, list_train/test,
anno_train/test), ``images/{train,test}2015/*.jpg``, ``instances_{train,test}2015.json``
(HICO-DET: 1-based inclusive pixel boxes per pair) and ``few_shot_classes.json``.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image, ImageDraw
from tqdm import tqdm

from defr import vocab
from defr.errors import DefrError
from defr.files import atomic_path, write_json

# (verb, object) in decreasing train frequency: the body follows a power law, the last len(TRAIN_TAIL) are pinned.
CLASSES = (
    ("ride", "bicycle"),
    ("ride", "horse"),
    ("sit_on", "chair"),
    ("no_interaction", "horse"),
    ("fly", "kite"),
    ("kick", "sports_ball"),
    ("hold", "cup"),
    ("walk", "dog"),
    ("stand_on", "skateboard"),
    ("stand_under", "umbrella"),
    ("no_interaction", "bicycle"),
    ("throw", "sports_ball"),
    ("drink_with", "cup"),
    ("carry", "surfboard"),
    ("sit_on", "bench"),
    ("no_interaction", "dog"),
    ("lie_on", "bed"),
    ("hold", "sports_ball"),
    ("carry", "suitcase"),
    ("pet", "dog"),
    ("ride", "elephant"),
    ("hold", "kite"),
    ("carry", "skateboard"),
    ("lie_on", "bench"),
    ("no_interaction", "chair"),
    ("no_interaction", "sports_ball"),
    ("ride", "motorcycle"),
    ("drag", "suitcase"),
)
TRAIN_TAIL = (9, 7, 5, 3, 2, 1, 1, 1)  # train images of the rarest classes at full size
TEST_TAIL = (4, 4, 3, 3, 3, 2, 2, 2)
TAIL_REFERENCE = {"train": 700, "test": 230}  # pair slots at which the tail counts apply unscaled
POWER = 0.9  # body frequencies ∝ rank^-POWER
PAIRS_PER_IMAGE = (0.45, 0.33, 0.15, 0.07)  # P(1), P(2), P(3), P(4)
TEST_FRACTION = 0.25
AMBIGUOUS = 0.04  # fraction of known negatives marked ambiguous (0), so loaders meet every HICO value
MAT_HEADER = b"MATLAB 5.0 MAT-file, written by defr synth"

Colour = tuple[int, int, int]
Point = tuple[float, float]


class SynthError(DefrError, ValueError):
    """Invalid arguments or output folder for the synthetic data generator."""


# --------------------------------------------------------------------------- drawing primitives


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


def _dir(deg: float) -> np.ndarray:
    return np.array([math.cos(math.radians(deg)), math.sin(math.radians(deg))])


def _pick(rng: np.random.Generator, palette: list[Colour]) -> Colour:
    base = palette[rng.integers(len(palette))]
    return tuple(int(np.clip(c + rng.integers(-18, 19), 0, 255)) for c in base)


def _shade(colour: Colour, f: float) -> Colour:
    return tuple(int(np.clip(c * f, 0, 255)) for c in colour)


# --------------------------------------------------------------------------- the human figure

ARM = (0.16, 0.15)
LEG = (0.25, 0.23)
TORSO, HEAD_R = 0.32, 0.085
SKIN = [(255, 220, 180), (230, 180, 140), (190, 140, 100), (140, 95, 60), (95, 65, 45)]


@dataclass(frozen=True)
class Pose:
    """Segment directions in degrees (0 = facing direction, 90 = up): torso hip → neck, limbs (upper, lower)."""

    torso: float = 90.0
    arm_f: tuple[float, float] = (-78.0, -88.0)
    arm_b: tuple[float, float] = (-102.0, -92.0)
    leg_f: tuple[float, float] = (-85.0, -90.0)
    leg_b: tuple[float, float] = (-95.0, -90.0)


@dataclass(frozen=True)
class Look:
    skin: Colour
    shirt: Colour
    pants: Colour


def random_look(rng: np.random.Generator) -> Look:
    shirt = tuple(int(c) for c in rng.integers(30, 235, 3))
    return Look(_pick(rng, SKIN), shirt, tuple(int(c) for c in rng.integers(20, 140, 3)))


def joints(pose: Pose, hip: Point) -> dict[str, np.ndarray]:
    hip = np.asarray(hip, dtype=float)
    j = {"hip": hip, "neck": hip + TORSO * _dir(pose.torso), "shoulder": hip + (TORSO - 0.03) * _dir(pose.torso)}
    j["head"] = hip + (TORSO + 0.1) * _dir(pose.torso)
    for side in "fb":
        for limb, start, lengths in (("arm", j["shoulder"], ARM), ("leg", hip, LEG)):
            a1, a2 = getattr(pose, f"{limb}_{side}")
            mid = start + lengths[0] * _dir(a1)
            j[f"{'elbow' if limb == 'arm' else 'knee'}_{side}"] = mid
            j[f"{'hand' if limb == 'arm' else 'foot'}_{side}"] = mid + lengths[1] * _dir(a2)
    return j


def figure(pose: Pose, hip: Point, look: Look) -> Shape:
    """The stick figure; limbs on the far side drawn first and darker, for depth."""
    j = joints(pose, hip)
    s, limb = Shape(), 0.055
    s.line([j["shoulder"], j["elbow_b"], j["hand_b"]], limb, _shade(look.shirt, 0.7))
    s.line([j["hip"], j["knee_b"], j["foot_b"]], limb, _shade(look.pants, 0.7))
    s.line([j["hip"], j["neck"]], 0.09, look.shirt)
    s.line([j["hip"], j["knee_f"], j["foot_f"]], limb, look.pants)
    s.line([j["shoulder"], j["elbow_f"], j["hand_f"]], limb, look.shirt)
    return s.ellipse(j["head"], HEAD_R, HEAD_R, look.skin)


def reach(start: np.ndarray, target, lengths=ARM, elbow_down: bool = True) -> tuple[float, float]:
    """(upper, lower) directions of a two-segment limb from ``start`` ending on ``target`` (or pointing at it)."""
    l1, l2 = lengths
    v = np.asarray(target, dtype=float) - start
    d = float(np.clip(np.hypot(*v), abs(l1 - l2) + 1e-3, l1 + l2 - 1e-3))
    base = math.degrees(math.atan2(v[1], v[0]))
    bend = math.degrees(math.acos((l1 * l1 + d * d - l2 * l2) / (2 * l1 * d)))
    upper = base - bend if elbow_down else base + bend
    elbow = start + l1 * _dir(upper)
    end = start + d * _dir(base)
    return upper, math.degrees(math.atan2(end[1] - elbow[1], end[0] - elbow[0]))


def standing_hip(pose: Pose, x: float = 0.0, ground: float = 0.0) -> Point:
    """Hip position that puts the lower foot on the ground."""
    j = joints(pose, (0.0, 0.0))
    return x, ground - min(j["foot_f"][1], j["foot_b"][1])


# --------------------------------------------------------------------------- objects

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
    frame, tyre, r = _pick(rng, BIKE), (25, 25, 25), 0.17
    rear, front, crank = (-0.3, r), (0.3, r), (-0.02, r)
    seat, stem = (-0.12, 0.48), (0.22, 0.5)
    s = Shape().ring(rear, r, 0.035, tyre).ring(front, r, 0.035, tyre)
    s.line([rear, crank, seat, rear], 0.03, frame).line([crank, stem, front], 0.03, frame)
    s.line([(-0.2, 0.5), (-0.05, 0.5)], 0.035, (20, 20, 20)).line([stem, (0.2, 0.56), (0.3, 0.56)], 0.03, frame)
    return s, {"seat": np.array([-0.12, 0.52]), "grip": np.array([0.28, 0.57])}


def motorcycle(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    body, r = _pick(rng, BIKE), 0.16
    s = Shape().ellipse((-0.32, r), r, r, (20, 20, 20)).ellipse((0.32, r), r, r, (20, 20, 20))
    s.ellipse((-0.32, r), 0.06, 0.06, (170, 170, 170)).ellipse((0.32, r), 0.06, 0.06, (170, 170, 170))
    s.poly([(-0.35, 0.3), (0.2, 0.3), (0.28, 0.45), (0.05, 0.5), (-0.3, 0.46)], body)
    s.line([(0.25, 0.35), (0.32, r), (0.22, 0.62)], 0.04, (60, 60, 60)).line(
        [(-0.28, 0.5), (0.0, 0.5)], 0.06, (20,) * 3
    )
    return s, {"seat": np.array([-0.15, 0.53]), "grip": np.array([0.22, 0.62])}


def horse(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    c = _pick(rng, HORSE)
    s = Shape()
    for x in (-0.3, -0.22, 0.2, 0.28):
        s.line([(x, 0.55), (x + rng.uniform(-0.04, 0.04), 0.0)], 0.065, _shade(c, 0.85))
    s.line([(-0.4, 0.68), (-0.52, 0.42)], 0.05, _shade(c, 0.6))
    s.ellipse((0.0, 0.62), 0.42, 0.15, c).poly([(0.22, 0.62), (0.36, 0.74), (0.52, 0.98), (0.42, 1.0)], c)
    s.ellipse((0.53, 0.93), 0.12, 0.065, c).line([(0.36, 0.74), (0.46, 0.99)], 0.035, _shade(c, 0.55))
    return s, {"seat": np.array([-0.04, 0.76]), "grip": np.array([0.32, 0.82])}


def elephant(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    c = _pick(rng, GREY)
    s = Shape()
    for x in (-0.35, -0.22, 0.2, 0.33):
        s.line([(x, 0.6), (x, 0.0)], 0.14, _shade(c, 0.85))
    s.ellipse((0.0, 0.78), 0.52, 0.3, c).ellipse((0.5, 0.88), 0.19, 0.19, c)
    s.line([(0.62, 0.82), (0.7, 0.5), (0.68, 0.22)], 0.08, c).ellipse((0.42, 0.86), 0.1, 0.15, _shade(c, 0.75))
    return s, {"seat": np.array([0.0, 1.06]), "grip": np.array([0.38, 1.02])}


def chair(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    c = _pick(rng, WOOD + PLASTIC)
    s = Shape().line([(-0.15, 0.27), (0.18, 0.27)], 0.05, c).line([(-0.15, 0.25), (-0.18, 0.66)], 0.045, c)
    s.line([(-0.14, 0.26), (-0.15, 0.0)], 0.035, c).line([(0.17, 0.26), (0.18, 0.0)], 0.035, c)
    return s, {"seat": np.array([0.0, 0.295])}


def bench(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    c = _pick(rng, WOOD + [(40, 100, 50), (120, 120, 125)])
    s = Shape().line([(-0.46, 0.27), (0.46, 0.27)], 0.05, c)
    s.line([(-0.46, 0.44), (0.46, 0.44)], 0.04, c).line([(-0.46, 0.54), (0.46, 0.54)], 0.04, c)
    for x in (-0.4, 0.4):
        s.line([(x, 0.56), (x, 0.0)], 0.04, _shade(c, 0.7))
    return s, {"seat": np.array([0.0, 0.295]), "top": np.array([0.0, 0.295])}


def bed(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    frame, sheet = _pick(rng, WOOD), _pick(rng, MATTRESS)
    s = Shape().poly([(-0.62, 0.1), (0.62, 0.1), (0.62, 0.24), (-0.62, 0.24)], frame)
    s.poly([(-0.6, 0.24), (0.6, 0.24), (0.6, 0.34), (-0.6, 0.34)], sheet)
    s.line([(-0.63, 0.0), (-0.63, 0.62)], 0.06, frame).line([(0.6, 0.0), (0.6, 0.3)], 0.05, frame)
    s.ellipse((-0.47, 0.38), 0.1, 0.045, (250, 250, 250))
    return s, {"top": np.array([0.0, 0.34])}


def sports_ball(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    r, c = rng.uniform(0.075, 0.1), _pick(rng, BALL)
    s = Shape().ellipse((0.0, r), r, r, c).line([(-r * 0.7, r * 1.4), (r * 0.7, r * 0.6)], r * 0.25, _shade(c, 0.5))
    return s, {"center": np.array([0.0, r]), "radius": np.array([r, r])}


def kite(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    c, tail = _pick(rng, BRIGHT), _pick(rng, BRIGHT)
    w, h = 0.13, 0.18
    s = Shape().poly([(0, h), (w, 0.04), (0, -h), (-w, 0.04)], c)
    s.line([(0, h), (0, -h)], 0.02, _shade(c, 0.5)).line([(-w, 0.04), (w, 0.04)], 0.02, _shade(c, 0.5))
    s.line([(0, -h), (0.05, -h - 0.1), (-0.04, -h - 0.2), (0.03, -h - 0.3)], 0.02, tail)
    return s, {"center": np.array([0.0, 0.0]), "bottom": np.array([0.0, -h])}


def cup(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    c = _pick(rng, CUP)
    s = (
        Shape()
        .ring((-0.055, 0.0), 0.035, 0.02, _shade(c, 0.8))
        .poly([(-0.05, 0.06), (0.05, 0.06), (0.04, -0.06), (-0.04, -0.06)], c)
    )
    return s, {"grip": np.array([-0.07, 0.0])}


def umbrella(rng: np.random.Generator, radius: float) -> Shape:
    """An open umbrella with its handle at the origin and the canopy above."""
    c, top = _pick(rng, UMBRELLA), 0.17
    arc = [(radius * math.cos(t), top + radius * 0.75 * math.sin(t)) for t in np.linspace(0, math.pi, 13)]
    s = Shape().poly(arc, c).line([(0.0, top + radius * 0.75), (0.0, -0.04), (0.035, -0.07)], 0.025, (40, 40, 40))
    return s.line([(-radius, top), (radius, top)], 0.02, _shade(c, 0.6))


def dog(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    c = _pick(rng, DOG)
    s = Shape().line([(-0.17, 0.25), (-0.25, 0.36)], 0.035, c)
    for x in (-0.13, -0.09, 0.09, 0.13):
        s.line([(x, 0.18), (x, 0.0)], 0.04, _shade(c, 0.8))
    s.ellipse((0.0, 0.2), 0.18, 0.075, c).ellipse((0.19, 0.3), 0.075, 0.07, c)
    s.ellipse((0.27, 0.28), 0.05, 0.03, _shade(c, 0.8)).ellipse((0.16, 0.32), 0.025, 0.055, _shade(c, 0.6))
    return s, {"back": np.array([-0.06, 0.27]), "collar": np.array([0.13, 0.27])}


def suitcase(rng: np.random.Generator, angle: float = 0.0) -> tuple[Shape, Keypoints]:
    """A suitcase on its side, bottom-left corner at the origin, rotated by ``angle`` degrees; ``end``: top-right."""
    c, t = _pick(rng, CASE), math.radians(angle)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    corners = [rot @ p for p in ((0, 0), (0.34, 0), (0.34, 0.22), (0, 0.22))]
    handle = [rot @ p for p in ((0.12, 0.22), (0.12, 0.26), (0.22, 0.26), (0.22, 0.22))]
    s = Shape().poly(corners, c).line(handle, 0.025, _shade(c, 0.5))
    return s.line([rot @ (0.02, 0.11), rot @ (0.32, 0.11)], 0.015, _shade(c, 1.6)), {"end": corners[2]}


def surfboard(rng: np.random.Generator) -> tuple[Shape, Keypoints]:
    c = _pick(rng, BOARD)
    s = Shape().ellipse((0.0, 0.045), 0.38, 0.045, c).line([(-0.3, 0.045), (0.3, 0.045)], 0.015, _pick(rng, BRIGHT))
    return s, {}


def skateboard(rng: np.random.Generator, upside_down: bool = False) -> tuple[Shape, Keypoints]:
    deck, wheel = _pick(rng, BRIGHT + [(30, 30, 30)]), (235, 235, 220)
    flip = -1.0 if upside_down else 1.0
    y = 0.065 if not upside_down else 0.0
    s = Shape().line([(-0.24, y + 0.025 * flip), (-0.2, y), (0.2, y), (0.24, y + 0.025 * flip)], 0.03, deck)
    for x in (-0.14, 0.14):
        s.ellipse((x, y - 0.035 * flip), 0.028, 0.028, wheel)
    return s, {}


# --------------------------------------------------------------------------- scenes: one human-object pair per class


@dataclass
class Pair:
    """One human-object pair in scene units; ``extra`` (kite string, leash) belongs to neither box."""

    human: Shape
    obj: Shape
    extra: Shape = field(default_factory=Shape)
    human_in_front: bool = True


def _j(rng: np.random.Generator, value: float, spread: float = 8.0) -> float:
    return value + rng.uniform(-spread, spread)


def _stand(rng: np.random.Generator) -> Pose:
    return Pose(
        arm_f=(_j(rng, -78, 5), _j(rng, -88, 5)),
        arm_b=(_j(rng, -102, 5), _j(rng, -92, 5)),
        leg_f=(_j(rng, -84, 3), _j(rng, -90, 3)),
        leg_b=(_j(rng, -96, 3), _j(rng, -90, 3)),
    )


def _walk(rng: np.random.Generator) -> Pose:
    return replace(_stand(rng), leg_f=(_j(rng, -68, 5), _j(rng, -84, 5)), leg_b=(_j(rng, -112, 5), _j(rng, -96, 5)))


def _with_arm(pose: Pose, hip: Point, target, side: str = "f", elbow_down: bool = True) -> Pose:
    return replace(pose, **{f"arm_{side}": reach(joints(pose, hip)["shoulder"], target, elbow_down=elbow_down)})


def _object(rng: np.random.Generator, name: str) -> tuple[Shape, Keypoints]:
    """A randomly sized object standing on the ground at x = 0, and its keypoints."""
    return _resized(rng, *OBJECTS[name](rng))


def _resized(rng: np.random.Generator, shape: Shape, kp: Keypoints) -> tuple[Shape, Keypoints]:
    """The object scaled by 0.85-1.15 about the origin."""
    k = rng.uniform(0.85, 1.15)
    return shape.map(lambda p: (p[0] * k, p[1] * k), scale=k), {n: v * k for n, v in kp.items()}


def ride(rng: np.random.Generator, look: Look, obj: str) -> Pair:
    shape, kp = _object(rng, obj)
    pose = Pose(torso=_j(rng, 74, 6), leg_f=(_j(rng, -50), _j(rng, -100)), leg_b=(_j(rng, -62), _j(rng, -108)))
    hip = kp["seat"] + (0.0, 0.03)
    pose = _with_arm(_with_arm(pose, hip, kp["grip"]), hip, kp["grip"] + (-0.03, -0.02), "b")
    return Pair(figure(pose, hip, look), shape)


def sit_on(rng: np.random.Generator, look: Look, obj: str) -> Pair:
    shape, kp = _object(rng, obj)
    pose = Pose(torso=_j(rng, 96, 5), leg_f=(_j(rng, -4, 6), _j(rng, -88, 5)), leg_b=(_j(rng, 4, 6), _j(rng, -92, 5)))
    hip = kp["seat"] + (rng.uniform(-0.03, 0.03), 0.035)
    knee = joints(pose, hip)["knee_f"]
    pose = _with_arm(_with_arm(pose, hip, knee + (0.0, 0.03)), hip, knee + (-0.05, 0.03), "b")
    return Pair(figure(pose, hip, look), shape)


def lie_on(rng: np.random.Generator, look: Look, obj: str) -> Pair:
    shape, kp = _object(rng, obj)
    pose = Pose(
        torso=_j(rng, 180, 4),
        arm_f=(_j(rng, -12, 6), _j(rng, 4, 6)),
        arm_b=(_j(rng, 12, 6), _j(rng, -4, 6)),
        leg_f=(_j(rng, 3, 4), _j(rng, 0, 4)),
        leg_b=(_j(rng, -3, 4), _j(rng, 0, 4)),
    )
    return Pair(figure(pose, kp["top"] + (0.1, 0.05), look), shape)


def hold(rng: np.random.Generator, look: Look, obj: str) -> Pair:
    pose = _stand(rng)
    hip = standing_hip(pose)
    target = joints(pose, hip)["shoulder"] + (_j(rng, 0.27, 0.02), _j(rng, -0.06, 0.05))
    pose = _with_arm(pose, hip, target)
    hand = joints(pose, hip)["hand_f"]
    shape, kp = _object(rng, obj)
    grip = kp["center"] - (kp["radius"][0] * 0.8, 0.0) if obj == "sports_ball" else kp.get("grip", kp.get("bottom"))
    return Pair(figure(pose, hip, look), shape.moved(*(hand - grip)), human_in_front=obj == "sports_ball")


def drink_with(rng: np.random.Generator, look: Look, obj: str) -> Pair:
    pose = replace(_stand(rng), torso=_j(rng, 92, 3))
    hip = standing_hip(pose)
    mouth = joints(pose, hip)["head"] + (0.075, -0.03)
    pose = _with_arm(pose, hip, mouth + (0.05, -0.07))
    hand = joints(pose, hip)["hand_f"]
    shape, kp = _object(rng, obj)
    return Pair(figure(pose, hip, look), shape.moved(*(hand - kp["grip"])), human_in_front=False)


def kick(rng: np.random.Generator, look: Look, obj: str) -> Pair:
    pose = Pose(
        torso=_j(rng, 98, 4),
        arm_f=(_j(rng, -30, 10), _j(rng, -20, 10)),
        arm_b=(_j(rng, -150, 10), _j(rng, -160, 10)),
        leg_f=(_j(rng, -32, 6), _j(rng, -42, 6)),
        leg_b=(_j(rng, -95, 4), _j(rng, -92, 4)),
    )
    hip = standing_hip(pose)
    foot = joints(pose, hip)["foot_f"]
    shape, kp = _object(rng, obj)
    r = kp["radius"][0]
    return Pair(figure(pose, hip, look), shape.moved(*(foot + (r * 0.95, -r * 0.15) - kp["center"])))


def throw(rng: np.random.Generator, look: Look, obj: str) -> Pair:
    pose = replace(_walk(rng), arm_f=(_j(rng, 50, 10), _j(rng, 70, 10)), arm_b=(_j(rng, -130), _j(rng, -120)))
    hip = standing_hip(pose)
    hand = joints(pose, hip)["hand_f"]
    shape, kp = _object(rng, obj)
    centre = hand + _dir(_j(rng, 50, 10)) * (kp["radius"][0] + _j(rng, 0.1, 0.03))
    return Pair(figure(pose, hip, look), shape.moved(*(centre - kp["center"])))


def fly(rng: np.random.Generator, look: Look, obj: str) -> Pair:
    pose = _stand(rng)
    hip = standing_hip(pose)
    pose = _with_arm(pose, hip, joints(pose, hip)["shoulder"] + (_j(rng, 0.17, 0.03), _j(rng, 0.2, 0.04)))
    hand = joints(pose, hip)["hand_f"]
    shape, kp = _object(rng, obj)
    offset = hand + (_j(rng, 0.55, 0.12), _j(rng, 0.85, 0.1)) - kp["center"]
    corner = kp["bottom"] + offset
    sag = (hand + corner) / 2 + (0.04, -0.08)
    return Pair(figure(pose, hip, look), shape.moved(*offset), Shape().line([hand, sag, corner], 0.012, (30, 30, 30)))


def carry(rng: np.random.Generator, look: Look, obj: str) -> Pair:
    pose = _stand(rng)
    hip = standing_hip(pose)
    head = joints(pose, hip)["head"]
    up = _j(rng, 0.15, 0.02)
    pose = _with_arm(pose, hip, head + (0.08, up), "f", elbow_down=False)
    pose = _with_arm(pose, hip, head + (-0.08, up), "b", elbow_down=True)
    carried = {"surfboard": surfboard, "suitcase": suitcase, "skateboard": partial(skateboard, upside_down=True)}
    shape, _ = _resized(rng, *carried[obj](rng))
    x0, y0, x1, _ = shape.bounds()
    shape = shape.moved(head[0] - (x0 + x1) / 2, head[1] + up + 0.02 - y0)  # resting on the raised hands
    return Pair(figure(pose, hip, look), shape, human_in_front=False)


def drag(rng: np.random.Generator, look: Look, obj: str) -> Pair:
    pose = replace(_walk(rng), torso=_j(rng, 82, 4))
    hip = standing_hip(pose)
    pose = _with_arm(pose, hip, joints(pose, hip)["shoulder"] + (_j(rng, -0.27, 0.02), _j(rng, -0.2, 0.03)), "b")
    hand = joints(pose, hip)["hand_b"]
    body, kp = _resized(rng, *suitcase(rng, angle=_j(rng, 28, 6)))
    _, y0, x1, _ = body.bounds()
    offset = np.array([hand[0] - 0.25 - x1, -y0])  # on the ground behind, its raised end towards the hand
    pole = Shape().line([kp["end"] + offset, hand], 0.025, (60, 60, 60))
    return Pair(figure(pose, hip, look), pole + body.moved(*offset))


def stand_on(rng: np.random.Generator, look: Look, obj: str) -> Pair:
    board, _ = _resized(rng, *skateboard(rng))
    pose = Pose(
        arm_f=(_j(rng, -20, 10), _j(rng, -10, 10)),
        arm_b=(_j(rng, -160, 10), _j(rng, -170, 10)),
        leg_f=(_j(rng, -74, 4), _j(rng, -96, 4)),
        leg_b=(_j(rng, -106, 4), _j(rng, -84, 4)),
    )
    return Pair(figure(pose, standing_hip(pose, ground=board.bounds()[3]), look), board)


def walk(rng: np.random.Generator, look: Look, obj: str) -> Pair:
    pose = _walk(rng)
    hip = standing_hip(pose)
    pose = _with_arm(pose, hip, joints(pose, hip)["shoulder"] + (_j(rng, 0.2, 0.03), _j(rng, -0.22, 0.03)))
    hand = joints(pose, hip)["hand_f"]
    shape, kp = _object(rng, obj)
    offset = np.array([hand[0] + _j(rng, 0.35, 0.06) - kp["collar"][0], 0.0])
    collar = kp["collar"] + offset
    leash = Shape().line([hand, (hand + collar) / 2 + (0.0, -0.05), collar], 0.014, (40, 30, 30))
    return Pair(figure(pose, hip, look), shape.moved(*offset), leash)


def pet(rng: np.random.Generator, look: Look, obj: str) -> Pair:
    pose = Pose(torso=_j(rng, 50, 5), leg_f=(_j(rng, -22, 5), _j(rng, -95, 5)), leg_b=(_j(rng, -100, 5), 180.0))
    hip = (0.0, 0.3)
    shoulder = joints(pose, hip)["shoulder"]
    shape, kp = _object(rng, obj)
    offset = np.array([shoulder[0] + _j(rng, 0.15, 0.03) - kp["back"][0], 0.0])
    pose = _with_arm(pose, hip, kp["back"] + offset + (0.0, 0.01), "f", elbow_down=False)
    return Pair(figure(pose, hip, look), shape.moved(*offset))


def stand_under(rng: np.random.Generator, look: Look, obj: str) -> Pair:
    pose = _stand(rng)
    hip = standing_hip(pose)
    head = joints(pose, hip)["head"]
    pose = _with_arm(pose, hip, head + (_j(rng, 0.13, 0.02), _j(rng, 0.06, 0.03)), elbow_down=True)
    hand = joints(pose, hip)["hand_f"]
    canopy = umbrella(rng, _j(rng, 0.34, 0.04)).moved(*hand)
    return Pair(figure(pose, hip, look), canopy, human_in_front=True)


def no_interaction(rng: np.random.Generator, look: Look, obj: str) -> Pair:
    pose = _stand(rng)
    human = figure(pose, standing_hip(pose), look)
    shape, _ = _object(rng, obj)
    gap = human.bounds()[2] + _j(rng, 0.4, 0.15) - shape.bounds()[0]
    return Pair(human, shape.moved(gap, 0.0))


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
SCENES: dict[str, Callable[[np.random.Generator, Look, str], Pair]] = {
    "ride": ride,
    "sit_on": sit_on,
    "lie_on": lie_on,
    "hold": hold,
    "drink_with": drink_with,
    "kick": kick,
    "throw": throw,
    "fly": fly,
    "carry": carry,
    "drag": drag,
    "stand_on": stand_on,
    "walk": walk,
    "pet": pet,
    "stand_under": stand_under,
    "no_interaction": no_interaction,
}


# --------------------------------------------------------------------------- images


@dataclass
class Annotation:
    """One image: its pixel size, classes and per pair [x0, y0, x1, y1] 0-based inclusive pixel boxes."""

    size: tuple[int, int]
    classes: list[int]
    boxes_h: list[list[int]]
    boxes_o: list[list[int]]


def draw_image(rng: np.random.Generator, classes: list[int], size: int) -> tuple[Image.Image, Annotation]:
    """An image holding one pair per class in ``classes`` (1-4), over a cluttered noisy background."""
    width, height = _image_size(rng, size)
    image = _background(rng, width, height)
    ann = Annotation((width, height), list(classes), [], [])
    for cls, cell in zip(classes, _cells(rng, len(classes), width, height), strict=True):
        verb, obj = CLASSES[cls]
        pair = SCENES[verb](rng, random_look(rng), obj)
        place = _placement(rng, pair.human + pair.obj + pair.extra, cell)
        layers = {
            name: render(shape, (width, height), place)
            for name, shape in vars(pair).items()
            if name != "human_in_front"
        }
        order = ("obj", "human") if pair.human_in_front else ("human", "obj")
        for name in (*order, "extra"):
            image.alpha_composite(layers[name])
        ann.boxes_h.append(_box(layers["human"]))
        ann.boxes_o.append(_box(layers["obj"]))
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    pixels += rng.normal(0.0, rng.uniform(2.0, 7.0), pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), ann


def _image_size(rng: np.random.Generator, size: int) -> tuple[int, int]:
    """The long side is ``size``, the short one 75-100 % of it; a third of the images are portrait."""
    short = int(round(size * rng.uniform(0.75, 1.0)))
    return (short, size) if rng.random() < 1 / 3 else (size, short)


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
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


def _placement(rng: np.random.Generator, scene: Shape, cell: tuple[float, float, float, float]) -> Placement:
    """Scale the pair to 70-100 % of the largest size that fits the cell, at a random spot in it, maybe mirrored."""
    x0, y0, x1, y1 = scene.bounds()
    left, top, w, h = cell
    scale = min(0.94 * w / (x1 - x0), 0.94 * h / (y1 - y0)) * rng.uniform(0.7, 1.0)
    left += rng.uniform(0, w - (x1 - x0) * scale)
    top += rng.uniform(0, h - (y1 - y0) * scale)
    return Placement(scale, left, top, x0, x1, y1, mirror=bool(rng.random() < 0.5))


def _box(layer: Image.Image) -> list[int]:
    """[x0, y0, x1, y1], 0-based inclusive, of the layer's drawn pixels."""
    box = layer.getchannel("A").getbbox()
    if box is None:
        raise RuntimeError("an entity was drawn entirely outside its image")  # _placement keeps pairs inside
    return [box[0], box[1], box[2] - 1, box[3] - 1]


# --------------------------------------------------------------------------- class frequencies


def class_counts(slots: int, n_images: int, split: str) -> np.ndarray:
    """Images per class ([C] int): a power law over the body, the pinned tail (scaled down for small sets)."""
    tail = np.array(TRAIN_TAIL if split == "train" else TEST_TAIL)
    tail = np.maximum(1, np.round(tail * min(1.0, slots / TAIL_REFERENCE[split]))).astype(int)
    body = len(CLASSES) - len(tail)
    weights = np.arange(1, body + 1, dtype=float) ** -POWER
    share = weights / weights.sum() * max(slots - int(tail.sum()), body)
    counts = np.floor(share).astype(int)
    counts[np.argsort(counts - share)[: int(round(share.sum())) - counts.sum()]] += 1  # largest remainders
    return np.minimum(np.concatenate([np.maximum(counts, 1), tail]), n_images)


def assign_classes(rng: np.random.Generator, n_images: int, split: str) -> list[list[int]]:
    """The classes (distinct, 1-4) of each image, matching ``class_counts`` as closely as capacity allows."""
    capacity = rng.choice(len(PAIRS_PER_IMAGE), size=n_images, p=PAIRS_PER_IMAGE) + 1
    counts = class_counts(int(capacity.sum()), n_images, split)
    images: list[list[int]] = [[] for _ in range(n_images)]
    for c in np.argsort(-counts, kind="stable"):
        free = np.flatnonzero(capacity > 0)
        if len(free) == 0:
            break  # only tiny sets run out of room; their rarest classes stay absent
        chosen = rng.choice(
            free, size=min(counts[c], len(free)), replace=False, p=capacity[free] / capacity[free].sum()
        )
        for i in chosen:
            images[i].append(int(c))
            capacity[i] -= 1
    for classes in images:
        if not classes:
            classes.append(0)
        rng.shuffle(classes)
    return images


# --------------------------------------------------------------------------- writing the data set


def generate_synthetic(out: str | Path, images: int = 600, seed: int = 0, size: int = 128) -> Path:
    """Write a synthetic HOI set of ``images`` images (long side ``size`` px) to ``out``; returns ``out``.

    Deterministic for a seed. ``out`` must not exist, be empty, or hold an earlier synthetic set
    (which is replaced); the set is built in a temporary folder beside it and moved into place.
    """
    if images < 8:
        raise SynthError(f"images must be >= 8, got {images}")
    if size < 32:
        raise SynthError(f"size must be >= 32 pixels, got {size}")
    out = Path(out)
    _check_output(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        _write_set(tmp, images, seed, size)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "anno.mat").is_file():
        raise SynthError(f"{out}: folder is not empty and holds no earlier synthetic set; choose another output")


def _replace_dir(new: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old)


def _write_set(root: Path, images: int, seed: int, size: int) -> None:
    rng = np.random.default_rng(seed)
    n_test = max(2, round(images * TEST_FRACTION))
    splits = {"train": images - n_test, "test": n_test}
    anns = {}
    with tqdm(total=images, desc="synth", unit="img", leave=False) as bar:
        for split, n in splits.items():
            folder = root / "images" / f"{split}2015"
            folder.mkdir(parents=True)
            anns[split] = []
            for i, classes in enumerate(assign_classes(rng, n, split)):
                image, ann = draw_image(rng, classes, size)
                image.save(folder / _file_name(split, i), quality=92)
                anns[split].append(ann)
                bar.update()
    train_counts = np.bincount([c for a in anns["train"] for c in a.classes], minlength=len(CLASSES))
    _write_mat(root / "anno.mat", anns, rng)
    for split in splits:
        write_json(_hicodet(split, anns[split], train_counts), root / f"instances_{split}2015.json")
    few = {f"few_{k}": [int(c) for c in np.flatnonzero((train_counts >= 1) & (train_counts <= k))] for k in (1, 5, 10)}
    write_json({"description": "classes with 1 / <=5 / <=10 training images", **few}, root / "few_shot_classes.json")


def _file_name(split: str, i: int) -> str:
    return f"HICO_{split}2015_{i + 1:08d}.jpg"


def _write_mat(path: Path, anns: dict[str, list[Annotation]], rng: np.random.Generator) -> None:
    """HICO's anno.mat: list_action (C × 1 struct), list_train/test (cells), anno_train/test (C × N)."""
    actions = np.zeros((len(CLASSES), 1), dtype=[("nname", object), ("vname", object), ("vname_ing", object)])
    for c, (verb, obj) in enumerate(CLASSES):
        words = verb.split("_")
        actions[c, 0] = (
            obj,
            verb,
            "_".join([vocab.gerund(words[0]), *words[1:]]) if verb != "no_interaction" else verb,
        )
    mat = {"list_action": actions}
    for split, split_anns in anns.items():
        mat[f"list_{split}"] = np.array([_file_name(split, i) for i in range(len(split_anns))], dtype=object)[:, None]
        mat[f"anno_{split}"] = _labels(split_anns, rng)
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, mat, do_compression=True)
    data = bytearray(buffer.getvalue())
    data[:116] = MAT_HEADER.ljust(116)  # scipy stamps the creation time here; a fixed text keeps output reproducible
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(bytes(data))


def _labels(anns: list[Annotation], rng: np.random.Generator) -> np.ndarray:
    """C × N HICO labels: 1 for the image's classes, -1 (sometimes 0) for other classes of its objects, NaN else."""
    labels = np.full((len(CLASSES), len(anns)), np.nan)
    objects = np.array([obj for _, obj in CLASSES])
    for n, ann in enumerate(anns):
        present = np.isin(objects, [CLASSES[c][1] for c in ann.classes])
        labels[present, n] = np.where(rng.random(int(present.sum())) < AMBIGUOUS, 0.0, -1.0)
        labels[ann.classes, n] = 1.0
    return labels


def _hicodet(split: str, anns: list[Annotation], train_counts: np.ndarray) -> dict:
    """The HICO-DET instances file: boxes 1-based inclusive (pixel x0..x1 written as x0 + 1 .. x1 + 1)."""
    v = vocab.hico()
    verb_id, object_id = {n: i for i, n in enumerate(v.verbs)}, {n: i for i, n in enumerate(v.objects)}
    rare = [c for c in range(len(CLASSES)) if train_counts[c] < 10]
    return {
        "annotation": [
            {
                "boxes_h": [[float(x + 1) for x in b] for b in a.boxes_h],
                "boxes_o": [[float(x + 1) for x in b] for b in a.boxes_o],
                "hoi": list(a.classes),
                "object": [object_id[CLASSES[c][1]] for c in a.classes],
                "verb": [verb_id[CLASSES[c][0]] for c in a.classes],
            }
            for a in anns
        ],
        "filenames": [_file_name(split, i) for i in range(len(anns))],
        "empty": [i for i, a in enumerate(anns) if not a.classes],
        "objects": list(v.objects),
        "verbs": list(v.verbs),
        "correspondence": [[c, object_id[o], verb_id[vb]] for c, (vb, o) in enumerate(CLASSES)],
        "size": [list(a.size) for a in anns],
        "rare": rare,
        "non_rare": [c for c in range(len(CLASSES)) if c not in rare],
    }
