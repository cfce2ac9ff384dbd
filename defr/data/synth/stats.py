"""Scene statistics of annotated images or video frames: how many pairs, people and objects, how big, how close.

A scene is one image or frame: its (width, height) and its pairs' human and object boxes
([G, 4] pixels, x1 y1 x2 y2; the convention, 0- or 1-based, does not matter for sizes). Boxes are
made distinct per scene (IoU >= 0.7 is the same entity), so a person in three pairs counts once.
Reported (``scene_stats``):

- ``pairs``, ``people``, ``objects`` per scene: mean, and the fraction of scenes with 1 and with >= 2 people;
- ``human_width``, ``human_height``, ``human_area``, ``object_area``: box size over the scene's
  width, height, area (median and 10th / 90th percentiles);
- ``neighbour_gap``: in scenes with >= 2 people, each person's horizontal centre distance to the
  nearest other person over the scene width (median, p10, p90).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from defr.detections import box_iou_inclusive

# HICO-DET annotates one person once per pair, often with slightly different boxes: boxes overlapping
# this much are one entity.
DISTINCT_IOU = 0.7

Scene = tuple[tuple[int, int], np.ndarray, np.ndarray]  # ((width, height), boxes_h [G, 4], boxes_o [G, 4])


def distinct_boxes(boxes: np.ndarray, same: float = DISTINCT_IOU) -> np.ndarray:
    """The boxes with those overlapping an earlier one by IoU >= ``same`` dropped (one entity annotated twice)."""
    kept: list[np.ndarray] = []
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        if not kept or box_iou_inclusive(box, np.asarray(kept)).max() < same:
            kept.append(box)
    return np.asarray(kept, dtype=np.float64).reshape(-1, 4)


def _summary(values: Sequence[float]) -> dict:
    if not len(values):
        return {"median": None, "p10": None, "p90": None}
    v = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(v)), "p10": float(np.percentile(v, 10)), "p90": float(np.percentile(v, 90))}


def scene_stats(scenes: Iterable[Scene]) -> dict:
    """Statistics of ``scenes`` (see the module docstring) → a JSON-able dict."""
    pairs, people, objects = [], [], []
    hw, hh, ha, oa, gaps = [], [], [], [], []
    for (width, height), boxes_h, boxes_o in scenes:
        pairs.append(len(np.asarray(boxes_h).reshape(-1, 4)))
        humans, objs = distinct_boxes(boxes_h), distinct_boxes(boxes_o)
        people.append(len(humans))
        objects.append(len(objs))
        w, h = humans[:, 2] - humans[:, 0] + 1, humans[:, 3] - humans[:, 1] + 1
        hw += (w / width).tolist()
        hh += (h / height).tolist()
        ha += (w * h / (width * height)).tolist()
        oa += ((objs[:, 2] - objs[:, 0] + 1) * (objs[:, 3] - objs[:, 1] + 1) / (width * height)).tolist()
        if len(humans) >= 2:
            cx = (humans[:, 0] + humans[:, 2]) / 2
            d = np.abs(cx[:, None] - cx[None, :]) + np.diag(np.full(len(cx), np.inf))
            gaps += (d.min(1) / width).tolist()
    people_arr = np.asarray(people)
    return {
        "scenes": len(pairs),
        "pairs_mean": float(np.mean(pairs)) if pairs else None,
        "one_pair": float(np.mean(np.asarray(pairs) == 1)) if pairs else None,
        "people_mean": float(people_arr.mean()) if people else None,
        "two_plus_people": float(np.mean(people_arr >= 2)) if people else None,
        "objects_mean": float(np.mean(objects)) if objects else None,
        "human_width": _summary(hw),
        "human_height": _summary(hh),
        "human_area": _summary(ha),
        "object_area": _summary(oa),
        "neighbour_gap": _summary(gaps),
    }


ROWS = (
    ("pairs / scene (mean)", "pairs_mean", None),
    ("scenes with one pair", "one_pair", None),
    ("people / scene (mean)", "people_mean", None),
    ("scenes with >= 2 people", "two_plus_people", None),
    ("objects / scene (mean)", "objects_mean", None),
    ("human width / scene width", "human_width", "median"),
    ("human height / scene height", "human_height", "median"),
    ("human area / scene area", "human_area", "median"),
    ("object area / scene area", "object_area", "median"),
    ("nearest person gap / width", "neighbour_gap", "median"),
)


def stats_rows(columns: dict[str, dict]) -> list[list[str]]:
    """[[row name, value per column...]]: medians with [p10, p90] for the size rows."""
    rows = []
    for name, key, part in ROWS:
        cells = [name]
        for stats in columns.values():
            value = stats[key]
            if part is None:
                cells.append("–" if value is None else f"{value:.2f}")
            elif value["median"] is None:
                cells.append("–")
            else:
                cells.append(f"{value['median']:.3f} [{value['p10']:.3f}, {value['p90']:.3f}]")
        rows.append(cells)
    return rows


def format_stats_table(columns: dict[str, dict]) -> str:
    """A Markdown table: one row per statistic, one column per scene set."""
    lines = ["| statistic | " + " | ".join(columns) + " |", "|---" + "|---:" * len(columns) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in stats_rows(columns)]
    return "\n".join(lines)
