"""Events of a video run against annotated ground truth: identity, a per-event table, frame-level HICO-DET.

Inputs are files of the formats ``defr video`` and ``defr synth --video`` write:

- the run's ``frames.jsonl`` (per frame: ``boxes_h``, ``boxes_o``, ``hoi``, ``scores``, ``human_id``,
  ``object_id``; 0-based pixels) and ``events.jsonl``;
- the ground truth: a detections JSONL (per frame: ``boxes``, ``labels``, ``ids``: every annotated
  entity's box and its id; person = 49) and an events JSONL (``human_id``, ``object_id`` of those
  ids, ``hoi``, ``verb``, ``object``, ``start_frame``, ``end_frame`` inclusive).

Identity. A track is the ground-truth entity whose box it carried: in each frame every tracked box
(human boxes to people, object boxes to the other entities) goes to the ground-truth box of highest
IoU (inclusive pixels) if that IoU is >= ``min_iou``. A predicted event's human and object become
the entity their track carried most often during the event (-1: never matched); tracks may pass
from one entity to another over a video, events are short.

False events (``false_events``): every predicted event that was not counted, by cause: its tracks never
carried an annotated entity, its human and object have no true event together (a person scored with a
neighbour's object), they have one of another class, or the triplet is right but off in time (late,
early, split, a duplicate). It says whether precision is lost to pairing, to the verb or to timing.

Per-event table (``event_table``): for each true event, the predicted event of the same (verb,
object) with the highest temporal IoU among those whose tracks match, else among all; its temporal
IoU, whether its tracks match, its peak score, and whether ``evaluate_events`` counted it (identity,
``t_iou``).

Frame-level HICO-DET (``frame_hicodet``): every frame is one image of the official protocol
(``defr.eval.hicodet``): its ground-truth pairs are the true events running at that frame (their
entities' boxes there), its detections the run's triplets of that frame. Frames without a true
event still count (their detections are false positives). A clip has no training counts, so
rare / non-rare are not reported: ``full`` is the mean AP over the classes with a ground-truth pair.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from defr import vocab
from defr.data.hicodet import HICODetAnnotations
from defr.detections import box_iou_inclusive
from defr.errors import ConfigError
from defr.eval.hicodet import evaluate_hicodet
from defr.video.errors import VideoError
from defr.video.event_files import EVENT_KEYS
from defr.video.events import EventConfig, EventDetector
from defr.video.scoring import evaluate_events, greedy_matches, index_by, pair_key, temporal_iou
from defr.video.smoothing import ScoreSmoother, SmoothingConfig

# Event thresholds tried by ``choose_event_config``: (on, off as a share of on, min_frames).
EVENT_GRID = tuple(
    (on, share, m) for on in (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5) for share in (0.5, 0.75) for m in (1, 5)
)
FALSE_EVENT_CAUSES = ("no_track", "other_pair", "other_class", "off_in_time")
__all__ = ["EVENT_KEYS", "VideoError"]  # re-exported: the records and their reader live in event_files


def track_identity(frames: Sequence[Mapping], truth: Sequence[Mapping], min_iou: float = 0.5) -> dict:
    """{(frame, track id): ground-truth entity id} from the run's frame lines and the truth's detection lines."""
    by_frame = {line["frame"]: line for line in truth}
    out = {}
    for line in frames:
        gt = by_frame.get(line["frame"])
        if gt is None or not gt["boxes"]:
            continue
        boxes = np.asarray(gt["boxes"], dtype=np.float64).reshape(-1, 4)
        person = np.asarray(gt["labels"]) == vocab.PERSON
        ids = np.asarray(gt["ids"])
        for key, ids_key, wanted in (("boxes_h", "human_id", person), ("boxes_o", "object_id", ~person)):
            if not wanted.any():
                continue
            for box, track in zip(line[key], line[ids_key], strict=True):
                if track < 0 or (line["frame"], track) in out:
                    continue
                iou = box_iou_inclusive(box, boxes[wanted])
                if iou.max() >= min_iou:
                    out[(line["frame"], track)] = int(ids[wanted][int(iou.argmax())])
    return out


def in_truth_ids(events: Sequence[Mapping], owners: Mapping) -> list[dict]:
    """Events with ``human_id`` / ``object_id`` replaced by the entity each track carried most often during the
    event (-1 if never; the earliest on ties); the original ids are kept as ``human_track`` / ``object_track``.
    Each event costs the frames its tracks were seen in, not the length of its span."""
    seen: dict[int, list[tuple[int, int]]] = {}
    for (frame, track), entity in owners.items():
        seen.setdefault(track, []).append((frame, entity))
    by_track = {}
    for track, rows in seen.items():
        rows.sort()
        by_track[track] = ([f for f, _ in rows], [e for _, e in rows])
    out = []
    for e in events:
        ids = {}
        for key in ("human_id", "object_id"):
            frames, entities = by_track.get(e[key], ((), ()))
            lo, hi = bisect_left(frames, e["start_frame"]), bisect_right(frames, e["end_frame"])
            votes = Counter(entities[lo:hi])
            ids[key] = votes.most_common(1)[0][0] if votes else -1
        out.append({**e, **ids, "human_track": e["human_id"], "object_track": e["object_id"]})
    return out


def event_table(relabelled: Sequence[Mapping], truth: Sequence[Mapping], t_iou: float = 0.5) -> list[dict]:
    """One row per true event (see the module docstring); ``relabelled``: predicted events in truth ids."""
    counted = set(_matches(relabelled, truth, t_iou).values())
    same_pair = index_by(relabelled, pair_key)
    same_class = index_by(relabelled, lambda p: (p["verb"], p["object"]))
    first_peak: dict[tuple, int] = {}  # per class, the first prediction of highest peak: the best at tIoU 0
    for i, p in enumerate(relabelled):
        k = (p["verb"], p["object"])
        if k not in first_peak or p["peak_score"] > relabelled[first_peak[k]]["peak_score"]:
            first_peak[k] = i
    rows = []
    for j, g in enumerate(truth):
        best = _best_overlap(relabelled, g, same_pair.get(pair_key(g)))
        if best is None:
            best = _best_overlap(relabelled, g, same_class.get((g["verb"], g["object"])))
        if best is None and (g["verb"], g["object"]) in first_peak:
            best = relabelled[first_peak[(g["verb"], g["object"])]]
        row = {
            "truth": {k: g[k] for k in EVENT_KEYS},
            "predicted": None if best is None else {k: best[k] for k in (*EVENT_KEYS, "human_track", "object_track")},
            "t_iou": 0.0 if best is None else round(temporal_iou(best, g), 4),
            "tracks_match": best is not None
            and (best["human_id"], best["object_id"]) == (g["human_id"], g["object_id"]),
            "peak_score": None if best is None else best["peak_score"],
            "matched": j in counted,
        }
        rows.append(row)
    return rows


def _best_overlap(predicted: Sequence[Mapping], g: Mapping, index) -> Mapping | None:
    """Of the predictions in ``index`` that overlap ``g``, the one of highest (tIoU, peak), the first on ties."""
    if index is None:
        return None
    ranked = [
        (temporal_iou(predicted[i], g), predicted[i]["peak_score"], -i)
        for i in index.overlapping(g["start_frame"], g["end_frame"])
    ]
    return predicted[-max(ranked)[2]] if ranked else None


def _matches(relabelled: Sequence[Mapping], truth: Sequence[Mapping], t_iou: float) -> dict[int, int]:
    """{predicted index: true index} of the pairs ``evaluate_events`` matches (with identity), in its greedy order."""
    return greedy_matches(relabelled, truth, t_iou, pair_key, pair_key)


def false_events(relabelled: Sequence[Mapping], truth: Sequence[Mapping], t_iou: float = 0.5) -> dict[str, int]:
    """Why each predicted event that is not counted is false → {cause: count} (``FALSE_EVENT_CAUSES``).

    relabelled: predicted events in truth ids (``in_truth_ids``). "no_track": its human or object track never
    carried an annotated entity; "other_pair": the two entities have no true event together (a person scored
    with a neighbour's object); "other_class": they have, of another (verb, object); "off_in_time": they have,
    of this class, but no span left to match overlaps it by ``t_iou`` (early, late, split, or a duplicate).
    """
    counted = _matches(relabelled, truth, t_iou)
    pairs = {(g["human_id"], g["object_id"]) for g in truth}
    classes = {(g["human_id"], g["object_id"], g["verb"], g["object"]) for g in truth}
    causes = dict.fromkeys(FALSE_EVENT_CAUSES, 0)
    for i, p in enumerate(relabelled):
        if i in counted:
            continue
        if p["human_id"] < 0 or p["object_id"] < 0:
            causes["no_track"] += 1
        elif (p["human_id"], p["object_id"]) not in pairs:
            causes["other_pair"] += 1
        elif (p["human_id"], p["object_id"], p["verb"], p["object"]) not in classes:
            causes["other_class"] += 1
        else:
            causes["off_in_time"] += 1
    return causes


def format_event_table(rows: Sequence[Mapping]) -> str:
    """The per-event table as Markdown."""
    lines = [
        "| true event | frames | best predicted | frames | tIoU | tracks match | peak | counted |",
        "|---|---|---|---|---:|---|---:|---|",
    ]
    for r in rows:
        g, p = r["truth"], r["predicted"]
        true = f"h{g['human_id']} {g['verb']} {g['object']} o{g['object_id']}"
        if p is None:
            lines.append(f"| {true} | {g['start_frame']}–{g['end_frame']} | – | – | 0 | – | – | no |")
            continue
        pred = f"h{p['human_id']} (track {p['human_track']}) → o{p['object_id']} (track {p['object_track']})"
        lines.append(
            f"| {true} | {g['start_frame']}–{g['end_frame']} | {pred} | {p['start_frame']}–{p['end_frame']} | "
            f"{r['t_iou']:.2f} | {'yes' if r['tracks_match'] else 'no'} | {r['peak_score']:.3f} | "
            f"{'yes' if r['matched'] else 'no'} |"
        )
    return "\n".join(lines)


def false_events_line(causes: Mapping[str, int]) -> str:
    """``false_events`` in words, for a printout."""
    words = {
        "no_track": "tracks never on an annotated entity",
        "other_pair": "a human with another's object",
        "other_class": "the right pair, another class",
        "off_in_time": "the right triplet, off in time",
    }
    return "; ".join(f"{causes[k]} {words[k]}" for k in FALSE_EVENT_CAUSES)


def class_index(class_names: Sequence[str], events: Sequence[Mapping]) -> list[int]:
    """Each event's class in the model's ``class_names`` ("verb object"); VideoError for a class it lacks."""
    index = {name: i for i, name in enumerate(class_names)}
    missing = sorted({f"{e['verb']} {e['object']}" for e in events} - set(index))
    if missing:
        raise VideoError(f"true event class(es) {missing[:5]} are not classes of the model")
    return [index[f"{e['verb']} {e['object']}"] for e in events]


def class_objects(class_names: Sequence[str]) -> list[int]:
    """The HICO object index of each "verb object" class name."""
    objects = {name: i for i, name in enumerate(vocab.hico().objects)}
    return [objects[name.rpartition(" ")[2]] for name in class_names]


def frame_annotations(
    truth_detections: Sequence[Mapping], truth_events: Sequence[Mapping], class_names: Sequence[str]
) -> HICODetAnnotations:
    """Each frame of the truth as one HICO-DET image: the pairs of the true events running there (1-based boxes),
    classes in the model's ``class_names``."""
    frames = sorted(truth_detections, key=lambda line: line["frame"])
    model_class = dict(zip(map(id, truth_events), class_index(class_names, truth_events), strict=True))
    objects_of = class_objects(class_names)
    boxes_h, boxes_o, hoi, objects, sizes = [], [], [], [], []
    spans = index_by(truth_events, lambda e: None).get(None)
    for line in frames:
        where = {i: b for i, b in zip(line["ids"], line["boxes"], strict=True)}
        at = sorted(spans.overlapping(line["frame"], line["frame"])) if spans else []
        running = [truth_events[j] for j in at]
        running = [e for e in running if e["human_id"] in where and e["object_id"] in where]
        boxes_h.append(np.asarray([where[e["human_id"]] for e in running], dtype=np.float64).reshape(-1, 4) + 1)
        boxes_o.append(np.asarray([where[e["object_id"]] for e in running], dtype=np.float64).reshape(-1, 4) + 1)
        hoi.append(np.asarray([model_class[id(e)] for e in running], dtype=np.int64))
        objects.append(np.asarray([objects_of[model_class[id(e)]] for e in running], dtype=np.int64))
        boxes = np.asarray(line["boxes"], dtype=np.float64).reshape(-1, 4)
        sizes.append(
            [int(boxes[:, 2].max(initial=0)) + 1, int(boxes[:, 3].max(initial=0)) + 1]
        )  # unused by the protocol
    return HICODetAnnotations(
        filenames=[str(line["frame"]) for line in frames],
        sizes=np.asarray(sizes, dtype=np.int64).reshape(-1, 2),
        boxes_h=boxes_h,
        boxes_o=boxes_o,
        hoi=hoi,
        object=objects,
        class_objects=np.asarray(objects_of, dtype=np.int64),
        rare=[],
        non_rare=list(range(len(class_names))),
    )


def frame_hicodet(
    frames: Sequence[Mapping], truth_detections: Sequence[Mapping], truth_events: Sequence[Mapping],
    class_names: Sequence[str],
) -> dict:  # fmt: skip
    """The official HICO-DET protocol with each frame an image → {"full", "frames", "pairs", "per_class_ap"}.

    class_names: the model's HOI classes, "verb object" (the frames' ``hoi`` space); true events are
    mapped to them by verb and object.
    """
    annotations = frame_annotations(truth_detections, truth_events, class_names)
    known = set(annotations.filenames)
    results = {
        str(line["frame"]): {k: line[k] for k in ("boxes_h", "boxes_o", "hoi", "scores")}
        for line in frames
        if str(line["frame"]) in known
    }
    metrics = evaluate_hicodet(annotations, results)
    return {
        "full": metrics["full"],
        "frames": annotations.num_images,
        "pairs": int(annotations.num_gt().sum()),
        "per_class_ap": metrics["per_class_ap"],
    }


def evaluate_run(
    frames: Sequence[Mapping],
    predicted: Sequence[Mapping],
    truth_detections: Sequence[Mapping],
    truth_events: Sequence[Mapping],
    class_names: Sequence[str] | None = None,
    t_iou: float = 0.5,
    min_iou: float = 0.5,
) -> dict:
    """Everything above for one run → {"events" (with identity), "events_any_track", "table", "false_events",
    "frame_hicodet"}.

    ``frame_hicodet`` is left out without the model's ``class_names``. ``VideoError`` for events without any
    frame line on their side (an empty frames file): who is who is then unknown, and every event would count as
    false with exit 0.
    """
    sides = (
        (predicted, frames, "the run", "the frames file of the same run"),
        (truth_events, truth_detections, "the ground truth", "its detections file of the same video"),
    )
    for events, lines, who, remedy in sides:
        if events and not lines:
            raise VideoError(f"{who} has {len(events)} events but no frame lines: give {remedy}")
    owners = track_identity(frames, truth_detections, min_iou)
    relabelled = in_truth_ids(predicted, owners)
    identity = {e[k]: e[k] for e in truth_events for k in ("human_id", "object_id")}
    report = {
        "events": evaluate_events(relabelled, truth_events, t_iou, identity),
        "events_any_track": evaluate_events(predicted, truth_events, t_iou),
        "table": event_table(relabelled, truth_events, t_iou),
        "false_events": false_events(relabelled, truth_events, t_iou),
    }
    if class_names is not None:
        report["frame_hicodet"] = frame_hicodet(frames, truth_detections, truth_events, class_names)
    return report


def replay_events(
    frames: Sequence[Mapping], class_names: Sequence[str], smoothing: SmoothingConfig, events: EventConfig
) -> list[dict]:
    """The events a run with ``smoothing`` and ``events`` would have written, from its frame lines (raw triplet
    scores and track ids), as the stream builds them: per frame the best score of each (human track, object
    track, class) with both tracks known, smoothed, then the hysteresis. Lets thresholds be chosen without
    re-running the model."""
    smoother, detector = ScoreSmoother(smoothing), EventDetector(list(class_names), events)
    out = []
    for line in sorted(frames, key=lambda x: x["frame"]):
        raw: dict[tuple[int, int, int], float] = {}
        for h, o, c, s in zip(line["human_id"], line["object_id"], line["hoi"], line["scores"], strict=True):
            if h >= 0 and o >= 0:
                raw[(h, o, c)] = max(s, raw.get((h, o, c), 0.0))
        out += detector.update(line["frame"], line.get("time_s", 0.0), smoother.update(raw))
    out += detector.close_all()
    return [e.to_json() for e in out]


class ValidationRun(NamedTuple):
    """One annotated run to choose event thresholds on: its frame lines, true boxes and true events."""

    frames: Sequence[Mapping]
    truth_detections: Sequence[Mapping]
    truth_events: Sequence[Mapping]


def choose_event_config(
    runs: Sequence[ValidationRun],
    class_names: Sequence[str],
    smoothing: SmoothingConfig,
    t_iou: float = 0.5,
) -> tuple[EventConfig, dict]:
    """The event thresholds (``EVENT_GRID``) with the best F1 with identity over ``runs`` pooled (their matched,
    predicted and true events summed) → (config, its scores). Meant for clips other than the one scored: one
    clip holds a dozen events, too few for thresholds that carry to another clip, so pool several."""
    if not runs:
        raise ConfigError("choose_event_config needs at least one validation run")
    prepared = [
        (
            run.frames,
            track_identity(run.frames, run.truth_detections),
            {e[k]: e[k] for e in run.truth_events for k in ("human_id", "object_id")},
            run.truth_events,
        )
        for run in runs
    ]
    best = None
    for on, off_share, min_frames in EVENT_GRID:
        config = EventConfig(on=on, off=on * off_share, min_frames=min_frames)
        totals = Counter()
        for frames, owners, identity, truth in prepared:
            relabelled = in_truth_ids(replay_events(frames, class_names, smoothing, config), owners)
            score = evaluate_events(relabelled, truth, t_iou, identity)
            totals.update({k: score[k] for k in ("matched", "predicted", "truth")})
        p = totals["matched"] / totals["predicted"] if totals["predicted"] else 0.0
        r = totals["matched"] / totals["truth"] if totals["truth"] else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        if best is None or f1 > best[0]:
            best = (f1, config, {"precision": p, "recall": r, **totals, "t_iou": t_iou})
    return best[1], {"f1": best[0], **best[2]}
