"""Annotated frames: every detected box with its track id, and each human's top interactions as labels.

Humans are blue, objects orange; a box's tag is ``#id label`` (``#-`` while not tracked yet). Under
each human box (above when there is no room) the human's ``top`` best triplets of the frame, one
line each: ``verb object #object_id score``. Frames whose long side is under ``min_side`` pixels are
enlarged first so text stays legible; every frame of one size is enlarged alike.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from defr import vocab
from defr.video.records import FrameResult, as_numpy

HUMAN = (40, 120, 255)
OBJECT = (255, 140, 0)
LINE = 11  # pixels per text line of PIL's default font


def annotate_frame(result: FrameResult, class_names: list[str], top: int = 2, min_side: int = 512) -> np.ndarray:
    """The frame of ``result`` with its boxes, track ids and top interactions → H'×W'×3 uint8 RGB."""
    image = Image.fromarray(as_numpy(result.image))
    scale = max(1.0, min_side / max(image.size))
    if scale > 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    width = max(1, round(max(image.size) / 300))
    objects = vocab.hico().objects
    dets = result.detections
    if dets is not None:
        ids = dets.track_ids if dets.track_ids is not None else np.full(len(dets), -1)
        for box, label, tid in zip(dets.boxes * scale, dets.labels, ids, strict=True):
            colour = HUMAN if label == vocab.PERSON else OBJECT
            draw.rectangle(box.tolist(), outline=colour, width=width)
            tag = f"#{tid if tid >= 0 else '-'} {objects[label]}"
            _text(draw, (box[0] + width, box[1] + width), tag, colour, font)
    if result.hoi is not None and len(result.hoi):
        _interactions(draw, result, class_names, top, scale, font, image.height)
    return np.asarray(image)


def _interactions(draw, result: FrameResult, class_names, top: int, scale: float, font, height: int) -> None:
    """The ``top`` best triplets of each human box, as lines under (or above) it."""
    r = result.hoi
    shown: dict[tuple, list[str]] = {}
    for k in range(len(r)):  # triplets are sorted best first
        key = tuple(r.boxes_h[k].tolist())
        lines = shown.setdefault(key, [])
        if len(lines) < top:
            oid = int(result.object_id[k])
            lines.append(f"{class_names[int(r.hoi[k])]} #{oid if oid >= 0 else '-'} {float(r.scores[k]):.2f}")
    for box, lines in shown.items():
        x0, y0, _, y1 = (v * scale for v in box)
        y = y1 + 2 if y1 + 2 + LINE * len(lines) <= height else max(0.0, y0 - 2 - LINE * len(lines))
        for n, line in enumerate(lines):
            _text(draw, (x0, y + LINE * n), line, (255, 255, 255), font, background=HUMAN)


def _text(draw, xy, text: str, colour, font, background=(0, 0, 0)) -> None:
    left, top, right, bottom = draw.textbbox(xy, text, font=font)
    draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=background)
    draw.text(xy, text, fill=colour, font=font)
