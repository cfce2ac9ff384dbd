"""Scenes: one human-object pair per verb, the pose and relative position expressing the verb."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np

from defr.data.synth.figure import Look, Pose, figure, joints, reach, standing_hip
from defr.data.synth.objects import OBJECTS, Keypoints, skateboard, suitcase, surfboard, umbrella
from defr.data.synth.shapes import Point, Shape, unit


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
    centre = hand + unit(_j(rng, 50, 10)) * (kp["radius"][0] + _j(rng, 0.1, 0.03))
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
