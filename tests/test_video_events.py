"""Temporal smoothing, hysteresis events and event scoring on hand-made score sequences."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from defr import vocab
from defr.cli import main
from defr.errors import ConfigError
from defr.video import EventConfig, EventDetector, ScoreSmoother, SmoothingConfig, evaluate_events
from defr.video.errors import VideoError
from defr.video.evaluation import (
    ValidationRun,
    choose_event_config,
    evaluate_run,
    event_table,
    false_events_line,
    format_event_table,
    frame_hicodet,
    in_truth_ids,
    replay_events,
    track_identity,
)
from defr.video.scoring import temporal_iou
from defr.video.timeline import plot_timeline

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


# --- evaluation against annotated events (defr.video.evaluation) ------------------------------------------------


def _truth_lines(frames: int) -> list[dict]:
    """Two people (ids 1, 3) beside two bicycles (ids 2, 4), standing still, for ``frames`` frames."""
    boxes = [[10, 10, 29, 59], [30, 30, 69, 59], [80, 10, 99, 59], [100, 30, 139, 59]]
    labels = [vocab.PERSON, BICYCLE, vocab.PERSON, BICYCLE]
    return [
        {"frame": t, "boxes": boxes, "labels": labels, "scores": [1.0] * 4, "ids": [1, 2, 3, 4]} for t in range(frames)
    ]


BICYCLE = vocab.hico().objects.index("bicycle")
TRUTH = [
    {"human_id": 1, "object_id": 2, "hoi": 0, "verb": "ride", "object": "bicycle", "start_frame": 0, "end_frame": 9},
    {"human_id": 3, "object_id": 4, "hoi": 0, "verb": "ride", "object": "bicycle", "start_frame": 10, "end_frame": 19},
]


def _frame(t: int, pairs: list[tuple]) -> dict:
    """A run's frame line: pairs of (human box, object box, hoi, score, human track, object track)."""
    return {
        "frame": t,
        "time_s": t / 10,
        "boxes_h": [p[0] for p in pairs],
        "boxes_o": [p[1] for p in pairs],
        "hoi": [p[2] for p in pairs],
        "scores": [p[3] for p in pairs],
        "human_id": [p[4] for p in pairs],
        "object_id": [p[5] for p in pairs],
    }


def _event(h: int, o: int, start: int, end: int, peak: float = 0.9) -> dict:
    return {"human_id": h, "object_id": o, "hoi": 0, "verb": "ride", "object": "bicycle",
            "start_frame": start, "end_frame": end, "peak_score": peak}  # fmt: skip


def _run(frames: int = 20) -> list[dict]:
    """Tracks 7 (person 1, boxes off by 2 px), 8 (bicycle 2), 9 (person 3), 5 (bicycle 4); track 6: a box on nothing."""
    a, b, c, d = [12, 11, 31, 60], [30, 30, 69, 59], [80, 10, 99, 59], [100, 30, 139, 59]
    stray = [200, 200, 220, 240]
    return [_frame(t, [(a, b, 0, 0.8, 7, 8), (c, d, 0, 0.8, 9, 5), (stray, d, 0, 0.1, 6, 5)]) for t in range(frames)]


def test_tracks_take_the_identity_of_the_box_they_carry():
    owners = track_identity(_run(), _truth_lines(20))
    assert owners[(0, 7)] == 1 and owners[(0, 8)] == 2 and owners[(5, 9)] == 3 and owners[(5, 5)] == 4
    assert (0, 6) not in owners  # IoU 0 with every annotated box


def test_identity_decides_a_match_and_the_table_says_why():
    predicted = [
        _event(7, 8, 0, 9),  # right entities, exact span: counted
        _event(7, 8, 10, 19, peak=0.95),  # person 1 on bicycle 2 while person 3 rides bicycle 4: wrong human
        _event(9, 5, 14, 19, peak=0.5),  # right entities, tIoU 6/10 = 0.6: counted
    ]
    relabelled = in_truth_ids(predicted, track_identity(_run(), _truth_lines(20)))
    assert [(e["human_id"], e["object_id"]) for e in relabelled] == [(1, 2), (1, 2), (3, 4)]
    identity = {i: i for i in (1, 2, 3, 4)}
    scored = evaluate_events(relabelled, TRUTH, 0.5, identity)
    assert (scored["matched"], scored["predicted"], scored["truth"]) == (2, 3, 2)
    assert evaluate_events(predicted, TRUTH, 0.5)["matched"] == 2  # any track: the wrong-human event takes span 2
    rows = event_table(relabelled, TRUTH)
    assert [r["matched"] for r in rows] == [True, True]
    assert rows[0]["t_iou"] == 1.0 and rows[0]["tracks_match"] and rows[0]["predicted"]["human_track"] == 7
    assert rows[1]["t_iou"] == 0.6 and rows[1]["tracks_match"] and rows[1]["peak_score"] == 0.5
    table = format_event_table(rows)
    assert table.count("\n") == 3 and "h3 ride bicycle o4" in table


def test_a_true_event_without_prediction_has_an_empty_row():
    rows = event_table([], TRUTH)
    assert [r["predicted"] for r in rows] == [None, None] and not any(r["matched"] for r in rows)
    assert "| – |" in format_event_table(rows)


def test_frame_level_hicodet_against_a_hand_count():
    """Each frame's running true pair found at 0.8 (20 TPs), the other pair at 0.3 and a stray one at 0.1 (40
    FPs below every TP) → AP 1. Then the idle pair of frames 0-9 at 0.9: 10 FPs above the 20 TPs, the best
    precision at any recall is 20 / 30 → 11-point AP 2/3."""
    names = ["ride bicycle", "hold sports_ball"]
    frames = _run()
    for t, line in enumerate(frames):
        line["scores"] = [0.8, 0.3, 0.1] if t < 10 else [0.3, 0.8, 0.1]
    result = frame_hicodet(frames, _truth_lines(20), TRUTH, names)
    assert result["frames"] == 20 and result["pairs"] == 20 and result["full"] == pytest.approx(1.0)
    for line in frames[:10]:
        line["scores"][1] = 0.9
    assert frame_hicodet(frames, _truth_lines(20), TRUTH, names)["full"] == pytest.approx(2 / 3)
    with pytest.raises(VideoError, match="not classes of the model"):
        frame_hicodet(frames, _truth_lines(20), TRUTH, ["hold sports_ball"])


def test_replayed_events_equal_the_detectors_on_the_same_scores():
    """Replaying a run's frame lines through ScoreSmoother + EventDetector by hand gives the same events."""
    frames = _run()
    for t, line in enumerate(frames):
        line["scores"] = [0.9 if t < 12 else 0.0, 0.2 if t < 5 else 0.9, 0.1]
    config, smoothing = EventConfig(on=0.5, off=0.3, min_frames=2), SmoothingConfig()
    smoother, detector, expected = ScoreSmoother(smoothing), EventDetector(NAMES, config), []
    for line in frames:
        raw = {(7, 8, 0): line["scores"][0], (9, 5, 0): line["scores"][1], (6, 5, 0): line["scores"][2]}
        expected += detector.update(line["frame"], line["time_s"], smoother.update(raw))
    expected += detector.close_all()
    assert replay_events(frames, NAMES, smoothing, config) == [e.to_json() for e in expected]
    assert len(expected) == 2


def test_thresholds_are_chosen_by_f1_on_the_given_run():
    """Person 1 rides (0.9) in frames 0-9, person 3 in 10-19, and a constant 0.12 on person 1 / bicycle 4 in
    every frame: only an opening threshold above 0.12 keeps that false event out; then both spans are exact."""
    frames = _run()
    for t, line in enumerate(frames):
        line["scores"] = [0.9 if t < 10 else 0.0, 0.9 if t >= 10 else 0.0, 0.12]
        line["human_id"][2], line["boxes_h"][2] = 7, line["boxes_h"][0]
    run = ValidationRun(frames, _truth_lines(20), TRUTH)
    config, score = choose_event_config([run], NAMES, SmoothingConfig(method="none"))
    assert score["f1"] == 1.0 and config.on > 0.12 and (score["matched"], score["predicted"]) == (2, 2)
    low = replay_events(frames, NAMES, SmoothingConfig(method="none"), EventConfig(on=0.1, off=0.05))
    assert len(low) == 3  # what a threshold below 0.12 would have added


def test_thresholds_are_chosen_on_validation_runs_pooled():
    """Run a wants an opening threshold above its false 0.12; run b's true riders score only 0.14. Alone, a
    picks a threshold that misses all of b; pooled (4 true events, not 2) the low threshold wins."""
    a = _run()
    for t, line in enumerate(a):
        line["scores"] = [0.9 if t < 10 else 0.0, 0.9 if t >= 10 else 0.0, 0.12]
        line["human_id"][2], line["boxes_h"][2] = 7, line["boxes_h"][0]
    b = _run()
    for t, line in enumerate(b):
        line["scores"] = [0.14 if t < 10 else 0.0, 0.14 if t >= 10 else 0.0, 0.0]
    smoothing = SmoothingConfig(method="none")
    runs = [ValidationRun(a, _truth_lines(20), TRUTH), ValidationRun(b, _truth_lines(20), TRUTH)]
    alone, _ = choose_event_config(runs[:1], NAMES, smoothing)
    pooled, score = choose_event_config(runs, NAMES, smoothing)
    assert alone.on > 0.14 and pooled.on < 0.12
    assert (score["matched"], score["predicted"], score["truth"]) == (4, 5, 4)
    assert score["precision"] == 0.8 and score["recall"] == 1.0 and score["f1"] == pytest.approx(8 / 9)
    with pytest.raises(ValueError, match="at least one"):
        choose_event_config([], NAMES, smoothing)


def test_false_events_are_told_apart_by_cause():
    """Each uncounted prediction gets one cause: pairing, class, timing, or tracks on nothing."""
    hold = {**_event(9, 5, 10, 19), "verb": "hold"}
    predicted = [
        _event(7, 8, 0, 9),  # counted: person 1 rides bicycle 2 in frames 0-9
        _event(7, 8, 0, 9, peak=0.5),  # a duplicate: off in time (its span is taken)
        _event(9, 5, 0, 4),  # person 3 rides bicycle 4, but in frames 10-19: off in time
        _event(7, 5, 0, 9),  # person 1 with bicycle 4: another's object
        hold,  # person 3 and bicycle 4, another class
        _event(6, 5, 10, 19),  # track 6 never on an annotated box
    ]
    report = evaluate_run(_run(), predicted, _truth_lines(20), TRUTH)
    assert report["events"]["matched"] == 1
    assert report["false_events"] == {"no_track": 1, "other_pair": 1, "other_class": 1, "off_in_time": 2}
    assert false_events_line(report["false_events"]).startswith("1 tracks never on an annotated entity; 1 a human")


def test_timeline_png_is_written(tmp_path):
    relabelled = in_truth_ids([_event(7, 8, 0, 9), _event(6, 5, 3, 6)], track_identity(_run(), _truth_lines(20)))
    path = plot_timeline(relabelled, TRUTH, tmp_path / "t" / "timeline.png", frames=20)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def test_eval_events_command(tmp_path):
    def write(name, rows):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    write("frames.jsonl", _run())
    write("events.jsonl", [_event(7, 8, 0, 9)])
    write("gt.detections.jsonl", _truth_lines(20))
    write("gt.events.jsonl", TRUTH)
    args = ["eval-events", "--frames", str(tmp_path / "frames.jsonl"), "--events", str(tmp_path / "events.jsonl"),
            "--truth-detections", str(tmp_path / "gt.detections.jsonl"),
            "--events-truth", str(tmp_path / "gt.events.jsonl"), "--out", str(tmp_path / "eval")]  # fmt: skip
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "eval" / "events_eval.json").read_text())
    assert report["events"]["precision"] == 1.0 and report["events"]["recall"] == 0.5
    assert "false events: 0 tracks" in r.output and report["false_events"]["other_pair"] == 0
    assert (tmp_path / "eval" / "timeline.png").is_file() and (tmp_path / "eval" / "events_table.md").is_file()
    write("events.jsonl", [{"human_id": 7}])
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "events.jsonl, line 1: missing key" in r.output


# --- reading the files: typed records, bounds (issue 28, item 5) ------------------------------------------------

_GOOD_FRAME = _run(1)[0]
_GOOD_TRUTH = _truth_lines(1)[0]


@pytest.mark.parametrize(
    ("kind", "row", "message"),
    [
        ("events", {**_event(7, 8, 0, 9), "start_frame": "3"}, "'start_frame' must be a whole number"),
        ("events", {**_event(7, 8, 0, 9), "start_frame": 3.5}, "'start_frame' must be a whole number"),
        ("events", {**_event(7, 8, 0, 9), "end_frame": 10**12}, "'end_frame' must be in 0..10000000"),
        ("events", {**_event(7, 8, 0, 9), "start_frame": -2}, "'start_frame' must be in 0.."),
        ("events", _event(7, 8, 9, 2), "'start_frame' 9 is after 'end_frame' 2"),
        ("events", {**_event(7, 8, 0, 9), "human_id": "a"}, "'human_id' must be an integer >= 0"),
        ("events", {**_event(7, 8, 0, 9), "object_id": [1, 2]}, "'object_id' must be an integer >= 0"),
        ("events", {**_event(7, 8, 0, 9), "peak_score": "high"}, "'peak_score' must be a finite number"),
        ("frames", {**_GOOD_FRAME, "human_id": [7, 9, 6, 1]}, "lists of different lengths"),
        ("frames", {**_GOOD_FRAME, "boxes_h": [[1, 2, 3]] * 3}, "boxes_h must have shape [N, 4]"),
        ("frames", {**_GOOD_FRAME, "boxes_o": [[5, 5, 1, 9]] * 3}, "boxes_o[0] = [5.0, 5.0, 1.0, 9.0] is inverted"),
        ("frames", {**_GOOD_FRAME, "frame": True}, "'frame' must be a whole number"),
        ("truth", {**_GOOD_TRUTH, "ids": [1, 2, 3, 4, 5]}, "lists of different lengths"),
        ("truth", {**_GOOD_TRUTH, "labels": [49, 1]}, "lists of different lengths"),
        ("truth", {**_GOOD_TRUTH, "boxes": [[1, 2]] * 4}, "boxes must have shape [N, 4]"),
        ("truth", {**_GOOD_TRUTH, "ids": [1, 1, 3, 4]}, "'ids' gives an id twice"),
        ("truth", {**_GOOD_TRUTH, "ids": ["a", 2, 3, 4]}, "ids is not a numeric array"),
    ],
)
def test_eval_events_refuses_a_bad_line_naming_file_line_and_field(tmp_path, kind, row, message):
    files = {"frames": [_GOOD_FRAME], "events": [_event(7, 8, 0, 9)], "truth": [_GOOD_TRUTH]}
    files[kind] = [files[kind][0], row] if kind != "events" else [row]
    if kind in ("frames", "truth") and row.get("frame") == 0:
        files[kind] = [row]
    r = _invoke_eval_events(tmp_path, files)
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    line = 1 if len(files[kind]) == 1 else 2
    assert f"{kind}.jsonl, line {line}" in r.output and message in r.output, r.output
    assert r.output.count("\n") == 1


@pytest.mark.parametrize("empty", ["frames", "truth"])
def test_eval_events_refuses_events_without_any_frame_line(tmp_path, empty):
    """Round-4 probe: an empty frames file beside 45 events exited 0 with precision 0."""
    files = {"frames": [_GOOD_FRAME], "events": [_event(7, 8, 0, 9)], "truth": [_GOOD_TRUTH], empty: []}
    r = _invoke_eval_events(tmp_path, files)
    who = "the run has 1 events" if empty == "frames" else "the ground truth has 2 events"
    assert r.exit_code == 1 and f"{who} but no frame lines" in r.output, r.output
    assert r.output.count("\n") == 1 and not list((tmp_path / "eval").iterdir())


@pytest.mark.parametrize("option", ["--t-iou", "--min-iou"])
def test_eval_events_refuses_nan_thresholds_before_any_work(tmp_path, option):
    """Round-5 probe: --t-iou nan passed click's range, the run scored, and writing failed naming a temporary
    file (`cannot write .../.events_eval.json.defr-...: ['events']['t_iou'] is nan`)."""
    files = {"frames": [_GOOD_FRAME], "events": [_event(7, 8, 0, 9)], "truth": [_GOOD_TRUTH]}
    _invoke_eval_events(tmp_path, files)
    args = ["eval-events", "--frames", str(tmp_path / "frames.jsonl"), "--events", str(tmp_path / "events.jsonl"),
            "--truth-detections", str(tmp_path / "truth.jsonl"), "--events-truth", str(tmp_path / "gt.events.jsonl"),
            "--out", str(tmp_path / "nan"), option, "nan"]  # fmt: skip
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and f"Invalid value for '{option}': 'nan' is not a finite number" in r.output
    assert not (tmp_path / "nan").exists()


def _invoke_eval_events(tmp_path, files: dict, truth_events=TRUTH):
    for name, rows in files.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "gt.events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in truth_events))
    args = ["eval-events", "--frames", str(tmp_path / "frames.jsonl"), "--events", str(tmp_path / "events.jsonl"),
            "--truth-detections", str(tmp_path / "truth.jsonl"),
            "--events-truth", str(tmp_path / "gt.events.jsonl"), "--out", str(tmp_path / "eval")]  # fmt: skip
    return CliRunner().invoke(main, args)


def test_eval_events_refuses_duplicated_frames_and_non_utf8(tmp_path):
    files = {"frames": [_GOOD_FRAME, _GOOD_FRAME], "events": [_event(7, 8, 0, 9)], "truth": [_GOOD_TRUTH]}
    r = _invoke_eval_events(tmp_path, files)
    assert r.exit_code == 1 and "frames.jsonl: frame 0 has a second line" in r.output
    files = {"frames": [_GOOD_FRAME], "events": [_event(7, 8, 0, 9)], "truth": [_GOOD_TRUTH, _GOOD_TRUTH]}
    assert "truth.jsonl: frame 0 has a second line" in _invoke_eval_events(tmp_path, files).output
    files["truth"] = [_GOOD_TRUTH]
    _invoke_eval_events(tmp_path, files)
    (tmp_path / "events.jsonl").write_bytes(b'{"verb": "\xff"}\n')
    args = ["eval-events", "--frames", str(tmp_path / "frames.jsonl"), "--events", str(tmp_path / "events.jsonl"),
            "--truth-detections", str(tmp_path / "truth.jsonl"),
            "--events-truth", str(tmp_path / "gt.events.jsonl"), "--out", str(tmp_path / "eval")]  # fmt: skip
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "events.jsonl, line 1: not UTF-8 text (byte 10)" in r.output


def _matches_by_scan(predicted, truth, t_iou, identity=None):
    """The greedy match as the scan over every pair did it (the reference for the indexed one)."""
    used, matched = set(), 0
    for p in sorted(predicted, key=lambda e: -e["peak_score"]):
        best, best_iou = None, t_iou
        for j, g in enumerate(truth):
            if j in used or (p["verb"], p["object"]) != (g["verb"], g["object"]):
                continue
            if identity is not None and (
                identity.get(p["human_id"]) != g["human_id"] or identity.get(p["object_id"]) != g["object_id"]
            ):
                continue
            iou = temporal_iou(p, g)
            if iou >= best_iou:
                best, best_iou = j, iou
        if best is not None:
            used.add(best)
            matched += 1
    return matched


def _random_events(rng, n: int, peak: bool) -> list[dict]:
    out = []
    for _ in range(n):
        start = int(rng.integers(0, 400))
        e = {"human_id": int(rng.integers(0, 4)), "object_id": int(rng.integers(4, 7)), "hoi": 0,
             "verb": str(rng.choice(["ride", "hold"])), "object": "bicycle",
             "start_frame": start, "end_frame": start + int(rng.integers(0, 40))}  # fmt: skip
        if peak:
            e["peak_score"] = float(rng.choice([0.5, 0.7, 0.9]))  # ties: the order must be kept
        out.append(e)
    return out


def test_indexed_matching_equals_the_scan_over_every_pair():
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(20):
        predicted, truth = _random_events(rng, 60, True), _random_events(rng, 50, False)
        identity = {i: i for i in range(7)}
        for t in (0.1, 0.5, 0.9):
            assert evaluate_events(predicted, truth, t)["matched"] == _matches_by_scan(predicted, truth, t)
            assert evaluate_events(predicted, truth, t, identity)["matched"] == _matches_by_scan(
                predicted, truth, t, identity
            )


def test_thousands_of_events_are_matched_in_well_under_a_second(tmp_path):
    """3,000 × 3,000 events (the scan took minutes); ids that never appear in frames; spans of 10^6 frames."""
    import time

    rng_events = [
        {**_event(10 + i, 5000 + i, 100 * i, 100 * i + 60), "peak_score": 0.5 + (i % 7) / 20} for i in range(3000)
    ]
    truth = [{k: v for k, v in e.items() if k != "peak_score"} for e in rng_events]
    long = {**_event(7, 8, 0, 1_000_000)}
    start = time.perf_counter()
    report = evaluate_run(_run(), [*rng_events, long], _truth_lines(20), truth)
    assert time.perf_counter() - start < 5.0
    assert report["events_any_track"]["matched"] == 3000 and len(report["table"]) == 3000


def test_timeline_size_is_bounded(tmp_path):
    from PIL import Image

    from defr.video.timeline import MAX_ROWS

    many = [_event(i, 10_000 + i, i, i + 5) for i in range(1000)]
    relabelled = [{**e, "human_track": e["human_id"], "object_track": e["object_id"]} for e in many]
    path = plot_timeline(relabelled, [], tmp_path / "timeline.png")
    width, height = Image.open(path).size
    assert width == 1100 and height <= 110 * (0.45 * MAX_ROWS + 1.2) + 1
