"""Temporal smoothing, hysteresis events and event scoring on hand-made score sequences."""

from __future__ import annotations

import pytest

from defr.errors import ConfigError
from defr.video import EventConfig, EventDetector, ScoreSmoother, SmoothingConfig, evaluate_events
from defr.video.scoring import temporal_iou

NAMES = ["ride bicycle", "hold sports_ball", "no_interaction horse"]
K = (1, 2, 0)  # human 1, object 2, "ride bicycle"


def smooth(method: str, seq: list[float | None], **kw) -> list[float]:
    s = ScoreSmoother(SmoothingConfig(method=method, min_score=0.0, **kw))
    return [round(s.update({} if x is None else {K: x}).get(K, 0.0), 6) for x in seq]


def test_ema_starts_from_zero_and_decays_when_absent():
    assert smooth("ema", [1.0, 1.0, None, 0.0], alpha=0.5) == [0.5, 0.75, 0.375, 0.1875]


def test_window_averages_the_last_w_frames_counting_earlier_ones_as_zero():
    assert smooth("window", [0.9, 0.3, 0.6, None, None, None], window=3) == [0.3, 0.4, 0.6, 0.3, 0.2, 0.0]


def test_none_passes_raw_scores():
    assert smooth("none", [0.2, None, 0.7]) == [0.2, 0.0, 0.7]


def test_keys_are_forgotten_once_negligible():
    s = ScoreSmoother(SmoothingConfig(alpha=0.5, floor=0.01, min_score=0.05))
    s.update({K: 0.04})  # below min_score: never started
    assert len(s) == 0
    s.update({K: 0.8})
    for _ in range(10):
        s.update({})
    assert len(s) == 0


def run_events(scores: list[float], on=0.5, off=0.3, min_frames=1, fps=10.0):
    det = EventDetector(NAMES, EventConfig(on=on, off=off, min_frames=min_frames))
    events = []
    for t, x in enumerate(scores):
        events += det.update(t, t / fps, {K: x})
    return events, det


def test_hysteresis_opens_at_on_and_closes_below_off():
    events, det = run_events([0.1, 0.6, 0.4, 0.35, 0.2, 0.1, 0.55, 0.9, 0.7])
    assert len(events) == 1
    e = events[0]
    assert (e.start_frame, e.end_frame, e.peak_score) == (1, 3, 0.6)
    assert (e.human_id, e.object_id, e.hoi, e.verb, e.object) == (1, 2, 0, "ride", "bicycle")
    assert e.start_s == pytest.approx(0.1) and e.end_s == pytest.approx(0.3)
    assert len(det) == 1  # the second one is still open
    (last,) = det.close_all()
    assert (last.start_frame, last.end_frame, last.peak_score) == (6, 8, 0.9)
    assert len(det) == 0


def test_scores_between_off_and_on_do_not_open_an_event():
    events, det = run_events([0.45, 0.49, 0.4, 0.1])
    assert events == [] and det.close_all() == []


def test_a_dip_above_off_does_not_split_an_event():
    events, det = run_events([0.8, 0.31, 0.8, 0.0])
    assert [(e.start_frame, e.end_frame) for e in events] == [(0, 2)]


def test_short_events_are_dropped():
    events, _ = run_events([0.8, 0.1, 0.8, 0.8, 0.8, 0.1], min_frames=2)
    assert [(e.start_frame, e.end_frame) for e in events] == [(2, 4)]


def test_a_vanished_key_closes_its_event():
    det = EventDetector(NAMES, EventConfig())
    assert det.update(0, 0.0, {K: 0.9}) == []
    (e,) = det.update(1, 0.1, {})
    assert (e.start_frame, e.end_frame) == (0, 0)


def test_events_json_has_the_documented_fields():
    (e,), _ = run_events([0.9, 0.0])
    assert list(e.to_json()) == [
        "human_id", "object_id", "hoi", "verb", "object", "start_frame", "end_frame", "start_s", "end_s", "peak_score"
    ]  # fmt: skip


def test_configs_are_validated():
    with pytest.raises(ConfigError, match="off <= on"):
        EventConfig(on=0.3, off=0.5)
    with pytest.raises(ConfigError, match="smoothing method"):
        SmoothingConfig(method="kalman")
    with pytest.raises(ConfigError, match="alpha"):
        SmoothingConfig(alpha=0.0)


def span(start, end, verb="ride", obj="bicycle", h=1, o=2, peak=1.0):
    return {"start_frame": start, "end_frame": end, "verb": verb, "object": obj, "human_id": h, "object_id": o,
            "peak_score": peak}  # fmt: skip


def test_temporal_iou_counts_inclusive_frames():
    assert temporal_iou(span(0, 9), span(5, 14)) == pytest.approx(5 / 15)
    assert temporal_iou(span(0, 4), span(5, 9)) == 0.0


def test_event_precision_recall_at_temporal_iou():
    truth = [span(0, 9), span(20, 29, "hold", "sports_ball", 3, 4)]
    predicted = [
        span(1, 10, peak=0.9),  # matches truth 0 (IoU 9/11)
        span(0, 9, peak=0.5),  # duplicate: truth 0 already taken
        span(20, 24, "hold", "sports_ball", 7, 8),  # IoU 0.5: matches
        span(40, 45),  # nothing there
    ]
    m = evaluate_events(predicted, truth)
    assert (m["matched"], m["precision"], m["recall"]) == (2, 0.5, 1.0)
    m = evaluate_events(predicted, truth, identity={1: 1, 2: 2, 7: 99, 8: 4})
    assert (m["matched"], m["recall"]) == (1, 0.5)  # track 7 is not entity 3
    assert evaluate_events([], truth)["precision"] == 0.0
