"""The human figure: a stick figure (head, torso, arms, legs) posed by segment directions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from defr.data.synth.shapes import Colour, Point, Shape, pick, shade, unit

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
    return Look(pick(rng, SKIN), shirt, tuple(int(c) for c in rng.integers(20, 140, 3)))


def joints(pose: Pose, hip: Point) -> dict[str, np.ndarray]:
    hip = np.asarray(hip, dtype=float)
    j = {"hip": hip, "neck": hip + TORSO * unit(pose.torso), "shoulder": hip + (TORSO - 0.03) * unit(pose.torso)}
    j["head"] = hip + (TORSO + 0.1) * unit(pose.torso)
    for side in "fb":
        for limb, start, lengths in (("arm", j["shoulder"], ARM), ("leg", hip, LEG)):
            a1, a2 = getattr(pose, f"{limb}_{side}")
            mid = start + lengths[0] * unit(a1)
            j[f"{'elbow' if limb == 'arm' else 'knee'}_{side}"] = mid
            j[f"{'hand' if limb == 'arm' else 'foot'}_{side}"] = mid + lengths[1] * unit(a2)
    return j


def figure(pose: Pose, hip: Point, look: Look) -> Shape:
    """The stick figure; limbs on the far side drawn first and darker, for depth."""
    j = joints(pose, hip)
    s, limb = Shape(), 0.055
    s.line([j["shoulder"], j["elbow_b"], j["hand_b"]], limb, shade(look.shirt, 0.7))
    s.line([j["hip"], j["knee_b"], j["foot_b"]], limb, shade(look.pants, 0.7))
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
    elbow = start + l1 * unit(upper)
    end = start + d * unit(base)
    return upper, math.degrees(math.atan2(end[1] - elbow[1], end[0] - elbow[0]))


def standing_hip(pose: Pose, x: float = 0.0, ground: float = 0.0) -> Point:
    """Hip position that puts the lower foot on the ground."""
    j = joints(pose, (0.0, 0.0))
    return x, ground - min(j["foot_f"][1], j["foot_b"][1])
