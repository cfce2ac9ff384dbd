"""A timeline picture of a run's events against the ground truth: one row per (human, object), time across.

Rows are (human, object) entity pairs in ground-truth ids (``defr.video.evaluation.in_truth_ids``);
predicted events whose tracks matched no entity get rows of their own, by track id. In each row the
true spans are wide light bars labelled with their verb, the predicted spans narrow bars over them:
green where ``evaluate_events`` counted the prediction (same class, same entities, temporal IoU
>= the threshold), red otherwise.

The picture is bounded whatever the files hold: at most ``MAX_ROWS`` rows are drawn (the first seen: true
pairs first), the others counted in the title, so 1,000 pairs give a picture of the same size as 100.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from defr.files import atomic_path
from defr.video.scoring import index_by, pair_key, temporal_iou

MAX_ROWS = 100  # 100 rows: 1100 × ~5100 px at the figure's size and dpi


def _row(e: Mapping, tracks: bool = False) -> str:
    if tracks:
        return f"track h{e['human_track']} / o{e['object_track']}"
    return f"h{e['human_id']} / o{e['object_id']}"


def _counted(p: Mapping, truth: Sequence[Mapping], index: Mapping, t_iou: float) -> bool:
    spans = index.get(pair_key(p))
    return spans is not None and any(
        temporal_iou(p, truth[j]) >= t_iou for j in spans.overlapping(p["start_frame"], p["end_frame"])
    )


def plot_timeline(
    relabelled: Sequence[Mapping],
    truth: Sequence[Mapping],
    path: str | os.PathLike,
    frames: int | None = None,
    t_iou: float = 0.5,
    title: str = "",
) -> Path:
    """Write the timeline PNG to ``path`` (atomically) → ``path``.

    relabelled: predicted events in ground-truth ids with ``human_track`` / ``object_track`` kept
    (``in_truth_ids``); truth: the true events; frames: the x range (default: the last event's end + 1).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [_row(e) for e in truth] + [_row(p, tracks=p["human_id"] < 0 or p["object_id"] < 0) for p in relabelled]
    rows = list(dict.fromkeys(keys))  # first-seen order: the true pairs, then unmatched tracks
    left_out = len(rows) - MAX_ROWS
    rows = rows[:MAX_ROWS]
    end = frames or max([e["end_frame"] + 1 for e in (*truth, *relabelled)], default=1)
    fig, ax = plt.subplots(figsize=(10, 0.45 * max(len(rows), 2) + 1.2))
    y = {name: i for i, name in enumerate(rows)}
    index = index_by(truth, pair_key)
    for g in truth:
        if _row(g) not in y:
            continue
        i = y[_row(g)]
        ax.broken_barh([(g["start_frame"], g["end_frame"] - g["start_frame"] + 1)], (i - 0.4, 0.8), color="#c9d7f0")
        ax.text(g["start_frame"] + 0.5, i + 0.28, f"{g['verb']} {g['object']}", fontsize=7, va="center")
    for p in relabelled:
        row = _row(p, tracks=p["human_id"] < 0 or p["object_id"] < 0)
        if row not in y:
            continue
        i = y[row]
        colour = "#2e9d4a" if _counted(p, truth, index, t_iou) else "#d1453b"
        ax.broken_barh([(p["start_frame"], p["end_frame"] - p["start_frame"] + 1)], (i - 0.22, 0.3), color=colour)
        ax.text(p["start_frame"] + 0.5, i - 0.07, f"{p['verb']} {p['object']}", fontsize=6, va="center", color="white")
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.invert_yaxis()
    ax.set_xlim(0, end)
    ax.set_xlabel("frame")
    title = title or "true spans (light) and predicted events (green: counted, red: not)"
    if left_out > 0:
        title += f"; {left_out} more rows not drawn"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
