"""Synthetic HOI video: the still-image scenes moving over a background, with per-frame boxes and GT spans.

The frame (``width`` × ¾ ``width``) is cut into lanes the way a still image of the setting is cut
into cells (``LAYOUT``): ``default`` two halves, ``crowded`` three columns side by side, each
reaching half a column into its neighbours (``row_cells``, as in a crowded still image). Each lane
shows a sequence of actors, one at a time with 1-2 s gaps between them: an actor is one
human-object pair of a class (drawn by ``scenes``, scaled and placed in its lane exactly as a pair
in a still image's cell) that appears, drifts smoothly within its lane and disappears. In
``crowded`` neighbouring lanes overlap, so people stand close to and in front of each other (the
mask is what separates them). Per-frame Gaussian pixel noise as in the still images. Rendered at
the model's input size (``width`` = the training images' long side), a frame has the training
images' scale; ``defr.data.synth.stats`` measures both (``defr demo`` reports them side by side).

Files, for ``OUT.mp4``:

- ``OUT.mp4``: the video (H.264; PyAV, the ``video`` extra);
- ``OUT.detections.jsonl``: one line per frame, ``{"frame", "boxes", "labels", "scores", "ids"}``:
  the ground-truth boxes as detections (0-based pixels of the frame, x2/y2 the last pixel inside;
  HICO labels, person = 49; scores 1; ``ids`` the entity ids the events use), the format
  ``defr video --detector detections:FILE`` reads;
- ``OUT.events.jsonl``: one ground-truth interaction span a line, in the events format
  (``human_id``, ``object_id``, ``hoi`` (index in ``CLASSES``), ``verb``, ``object``, ``start_frame``,
  ``end_frame`` (inclusive), ``start_s``, ``end_s``, ``peak_score`` = 1).

Deterministic for a seed (the video's bytes depend on the encoder build; the JSONL files do not).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from defr import vocab
from defr.data.synth.classes import CLASSES
from defr.data.synth.dataset import TRAIN_TAIL
from defr.data.synth.figure import random_look
from defr.data.synth.images import background, drawn_box, placement, row_cells
from defr.data.synth.pretraining import check_evaluation_seed
from defr.data.synth.scenes import SCENES
from defr.data.synth.shapes import render
from defr.errors import ConfigError
from defr.files import OutputSet
from defr.optional import import_av

# setting → (lanes, how far each lane reaches into its neighbours, in lanes): the still images' cells
LAYOUT = {"default": (2, 0.0), "crowded": (3, 0.5)}


@dataclass
class Actor:
    """One pair on screen from ``start`` to ``end`` (inclusive frames) in ``lane``."""

    cls: int  # index into CLASSES
    lane: int
    start: int
    end: int
    human_id: int
    object_id: int


@dataclass
class VideoScript:
    """What a synthetic video shows: its size, length and actors."""

    width: int
    height: int
    frames: int
    fps: float
    actors: list[Actor]
    setting: str = "default"


@dataclass
class SyntheticVideo:
    """The files ``generate_synthetic_video`` wrote."""

    video: Path
    detections: Path
    events: Path


def beside(video: str | os.PathLike, what: str) -> Path:
    """``OUT.mp4`` → ``OUT.{what}.jsonl``."""
    video = Path(video)
    return video.with_name(f"{video.stem}.{what}.jsonl")


def make_script(rng: np.random.Generator, frames: int, fps: float, width: int, setting: str = "default") -> VideoScript:
    """Actors for each lane: spans of 2-5 s (at least 8 frames), 1-2 s gaps (longer than the tracker keeps a lost
    track, so a newcomer is a new track), classes of the learnable body."""
    if setting not in LAYOUT:
        raise ConfigError(f"unknown video setting {setting!r}; choose one of {', '.join(LAYOUT)}")
    height = 2 * round(width * 3 / 8)
    actors, next_id = [], 1
    classes = len(CLASSES) - len(TRAIN_TAIL)  # the rarest classes are barely learned by small models
    for lane in range(LAYOUT[setting][0]):
        t = int(rng.integers(0, max(1, round(0.5 * fps))))
        while t < frames - 8:
            length = max(8, round(rng.uniform(2.0, 5.0) * fps))
            end = min(frames - 1, t + length - 1)
            actors.append(Actor(int(rng.integers(classes)), lane, t, end, next_id, next_id + 1))
            next_id += 2
            t = end + 1 + max(1, round(rng.uniform(1.0, 2.0) * fps))
    return VideoScript(width, height, frames, fps, actors, setting)


@dataclass
class _Sprite:
    """An actor's layers, drawn once on a lane-sized canvas, and how it moves."""

    layers: list[Image.Image]  # in drawing order
    box_h: np.ndarray  # [4] 0-based inclusive, on the canvas
    box_o: np.ndarray
    dx: tuple[float, float]  # the x offsets it drifts between
    dy: tuple[float, float]
    period: float  # frames per back-and-forth
    phase: float

    def offset(self, t: int) -> tuple[int, int]:
        w = 0.5 - 0.5 * math.cos(2 * math.pi * t / self.period + self.phase)
        return round(self.dx[0] + (self.dx[1] - self.dx[0]) * w), round(self.dy[0] + (self.dy[1] - self.dy[0]) * w)


def _sprite(rng: np.random.Generator, actor: Actor, lane_w: int, height: int) -> _Sprite:
    """The actor drawn on its lane's canvas (``lane_w`` × ``height``), placed as a still image places a pair in
    a cell, drifting within the lane."""
    verb, obj = CLASSES[actor.cls]
    pair = SCENES[verb](rng, random_look(rng), obj)
    place = placement(rng, pair.human + pair.obj + pair.extra, (0.0, 0.0, float(lane_w), float(height)))
    layers = {name: render(getattr(pair, name), (lane_w, height), place) for name in ("human", "obj", "extra")}
    order = ("obj", "human") if pair.human_in_front else ("human", "obj")
    box_h, box_o = np.array(drawn_box(layers["human"])), np.array(drawn_box(layers["obj"]))
    union = [*np.minimum(box_h[:2], box_o[:2]), *np.maximum(box_h[2:], box_o[2:])]
    extra = layers["extra"].getchannel("A").getbbox()
    if extra is not None:
        union = [
            min(union[0], extra[0]),
            min(union[1], extra[1]),
            max(union[2], extra[2] - 1),
            max(union[3], extra[3] - 1),
        ]
    room_x = (-union[0], lane_w - 1 - union[2])
    room_y = (-union[1], height - 1 - union[3])
    dx = sorted(rng.uniform(*room_x, size=2)) if room_x[1] > room_x[0] else (0.0, 0.0)
    dy = sorted(rng.uniform(*room_y, size=2) * 0.3) if room_y[1] > room_y[0] else (0.0, 0.0)
    if rng.random() < 0.5:
        dx = dx[::-1]
    length = actor.end - actor.start + 1
    return _Sprite(
        [layers[n] for n in (*order, "extra")],
        box_h,
        box_o,
        tuple(dx),
        tuple(dy),
        period=float(rng.uniform(1.0, 2.0) * length),
        phase=0.0,
    )


def lanes(script: VideoScript) -> list[tuple[int, int]]:
    """(left, width) in pixels of each lane: the row cells of a still image of the setting."""
    count, reach = LAYOUT[script.setting]
    cells = row_cells(count, script.width, script.height, reach)
    return [(round(left), round(left + w) - round(left)) for left, _, w, _ in cells]


def render_frames(script: VideoScript, seed: int):
    """Frames of ``script`` → iterator of (H×W×3 uint8 RGB, that frame's detections line)."""
    rng = np.random.default_rng(seed)
    cells = lanes(script)
    base = background(rng, script.width, script.height)
    sprites = {id(a): _sprite(rng, a, cells[a.lane][1], script.height) for a in script.actors}
    objects = {name: i for i, name in enumerate(vocab.hico().objects)}
    for t in range(script.frames):
        image = base.copy()
        boxes, labels, ids = [], [], []
        for a in script.actors:
            if not a.start <= t <= a.end:
                continue
            s = sprites[id(a)]
            x, y = s.offset(t - a.start)
            x += cells[a.lane][0]
            for layer in s.layers:
                image.alpha_composite(layer, dest=(x, y)) if x >= 0 and y >= 0 else image.alpha_composite(
                    layer.crop((max(0, -x), max(0, -y), layer.width, layer.height)), dest=(max(0, x), max(0, y))
                )
            shift = np.array([x, y, x, y])
            boxes += [(s.box_h + shift).tolist(), (s.box_o + shift).tolist()]
            labels += [vocab.PERSON, objects[CLASSES[a.cls][1]]]
            ids += [a.human_id, a.object_id]
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        pixels += rng.normal(0.0, 3.0, pixels.shape)
        line = {"frame": t, "boxes": boxes, "labels": labels, "scores": [1.0] * len(labels), "ids": ids}
        yield np.clip(pixels, 0, 255).astype(np.uint8), line


def gt_events(script: VideoScript) -> list[dict]:
    """The ground-truth spans of ``script`` in the events format, by start frame."""
    out = []
    for a in sorted(script.actors, key=lambda a: (a.start, a.lane)):
        verb, obj = CLASSES[a.cls]
        out.append(
            {
                "human_id": a.human_id,
                "object_id": a.object_id,
                "hoi": a.cls,
                "verb": verb,
                "object": obj,
                "start_frame": a.start,
                "end_frame": a.end,
                "start_s": round(a.start / script.fps, 6),
                "end_s": round(a.end / script.fps, 6),
                "peak_score": 1.0,
            }
        )
    return out


def generate_synthetic_video(
    out: str | os.PathLike,
    frames: int = 150,
    fps: float = 15.0,
    width: int = 256,
    seed: int = 0,
    setting: str = "default",
    overwrite: bool = False,
) -> SyntheticVideo:
    """Write a synthetic HOI video ``out`` (``.mp4``) with its detections and events files beside it.

    The three files are one set (``defr.files.OutputSet``): staged, then swapped in together. The
    detections and events files are named by us: one that exists and was not written by defr is
    refused (``OutputRefused``) unless ``overwrite``. Raises ``ConfigError`` for bad arguments and
    when PyAV is missing.
    """
    if frames < 10:
        raise ConfigError(f"frames must be >= 10, got {frames}")
    if not fps > 0:
        raise ConfigError(f"fps must be > 0, got {fps}")
    if width < 64:
        raise ConfigError(f"width must be >= 64 pixels, got {width}")
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise ConfigError(f"{out}: the synthetic video is written as .mp4")
    av = import_av("writing the synthetic video")
    check_evaluation_seed(seed)
    script = make_script(np.random.default_rng(seed), frames, fps, width, setting)
    files = SyntheticVideo(out, beside(out, "detections"), beside(out, "events"))
    named = {"--video": out, "detections": files.detections, "events": files.events}
    with OutputSet(named, defaults=["detections", "events"], overwrite=overwrite) as staged:  # one set
        lines = []
        with av.open(str(staged["--video"]), "w", format="mp4") as container:
            stream = container.add_stream(
                "libx264" if "libx264" in av.codecs_available else "mpeg4", rate=Fraction(fps).limit_denominator(1001)
            )
            stream.width, stream.height, stream.pix_fmt = script.width, script.height, "yuv420p"
            if stream.codec_context.name == "libx264":
                stream.options = {"preset": "veryfast", "crf": "18"}
            for pixels, line in render_frames(script, seed + 1):
                for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                    container.mux(packet)
                lines.append(line)
            for packet in stream.encode():
                container.mux(packet)
        _write_jsonl(staged["detections"], lines)
        _write_jsonl(staged["events"], gt_events(script))
    return files


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
