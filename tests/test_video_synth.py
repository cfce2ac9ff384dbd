"""Synthetic video: files and formats, tracking on it (stable ids), the demo's video stage."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from click.testing import CliRunner

from defr import vocab
from defr.cli import main
from defr.data.synth import CLASSES, generate_synthetic_video
from defr.errors import ConfigError
from defr.runtime.io import load_frame_detections
from defr.video import ObjectTracker, PrecomputedDetector


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return generate_synthetic_video(tmp_path_factory.mktemp("sv") / "clip.mp4", frames=60, fps=12, width=160, seed=3)


def jsonl(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_files_and_formats(synthetic):
    import av

    assert synthetic.detections.name == "clip.detections.jsonl" and synthetic.events.name == "clip.events.jsonl"
    with av.open(str(synthetic.video)) as c:
        decoded = [f for f in c.decode(video=0)]
    assert len(decoded) == 60 and (decoded[0].width, decoded[0].height) == (160, 120)
    lines = jsonl(synthetic.detections)
    assert [x["frame"] for x in lines] == list(range(60))
    assert all(list(x) == ["frame", "boxes", "labels", "scores", "ids"] for x in lines)
    events = jsonl(synthetic.events)
    assert len(events) >= 2
    for e in events:
        assert (e["verb"], e["object"]) == CLASSES[e["hoi"]]
        assert e["end_s"] == pytest.approx(e["end_frame"] / 12, abs=1e-6)
        for t in range(e["start_frame"], e["end_frame"] + 1):  # both boxes are there, inside the frame, every frame
            line = lines[t]
            h, o = line["ids"].index(e["human_id"]), line["ids"].index(e["object_id"])
            assert line["labels"][h] == vocab.PERSON and vocab.hico().objects[line["labels"][o]] == e["object"]
            for box in (line["boxes"][h], line["boxes"][o]):
                assert 0 <= box[0] <= box[2] < 160 and 0 <= box[1] <= box[3] < 120
    dets = load_frame_detections(synthetic.detections)  # what --detector detections:FILE reads
    assert sorted(dets) == list(range(60))


def test_the_synthetic_video_follows_the_umask(tmp_path):
    """Issue 18 #20: ``defr synth --video`` writes 0666 minus the umask (mkstemp's 0600 before)."""
    import os

    previous = os.umask(0o027)
    try:
        made = generate_synthetic_video(tmp_path / "u.mp4", frames=10, fps=5, width=64, seed=0)
    finally:
        os.umask(previous)
    assert {p.stat().st_mode & 0o777 for p in (made.video, made.detections, made.events)} == {0o640}


def test_same_seed_same_spans_and_boxes(synthetic, tmp_path):
    again = generate_synthetic_video(tmp_path / "again.mp4", frames=60, fps=12, width=160, seed=3)
    assert again.detections.read_text() == synthetic.detections.read_text()
    assert again.events.read_text() == synthetic.events.read_text()


def test_track_ids_are_stable_on_the_synthetic_video(synthetic):
    """Each ground-truth entity keeps one track id from its second frame to its last (from its first where its
    label first appears: a label's tracker confirms the boxes of its first frame at once); no id is shared."""
    lines = jsonl(synthetic.detections)
    detector = PrecomputedDetector.from_file(synthetic.detections)
    tracker = ObjectTracker(frame_rate=12)
    seen = defaultdict(list)  # GT id → track ids per frame
    labels, on_first = set(), set()  # on_first: entities drawn on their label's first frame
    for line in lines:
        ids = tracker.update(detector([None], [line["frame"]])[0])
        for gt, tid in zip(line["ids"], ids.tolist(), strict=True):
            seen[gt].append(tid)
        on_first |= {gt for gt, label in zip(line["ids"], line["labels"], strict=True) if label not in labels}
        labels |= set(line["labels"])
    owners = {}
    for gt, tids in seen.items():
        if gt not in on_first:
            assert tids[0] == -1, (gt, tids)  # a new box is confirmed on its second frame
        assert len(set(tids[1:])) == 1 and tids[1] > 0, (gt, tids)
        assert tids[1] not in owners, (gt, owners)
        owners[tids[1]] = gt


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="frames must be >= 10"):
        generate_synthetic_video(tmp_path / "x.mp4", frames=3)
    with pytest.raises(ConfigError, match="written as .mp4"):
        generate_synthetic_video(tmp_path / "x.avi")


def test_synth_command_writes_a_video(tmp_path):
    out = tmp_path / "v.mp4"
    result = CliRunner().invoke(main, ["synth", "--video", str(out), "--frames", "20", "--size", "96", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and (tmp_path / "v.detections.jsonl").is_file() and (tmp_path / "v.events.jsonl").is_file()
    result = CliRunner().invoke(main, ["synth", str(tmp_path / "d"), "--video", str(out)])
    assert result.exit_code == 2 and "not both" in result.output


@pytest.mark.slow
def test_video_demo_stage(tmp_path):
    """run_video_demo end to end on a random tiny model: it runs, writes its files and scores its events."""
    from defr.demo import run_video_demo
    from defr.demo_report import video_demo_line
    from defr.model import create_model, save_checkpoint
    from defr.runtime import load_detector

    checkpoint = tmp_path / "model.safetensors"
    save_checkpoint(create_model("tiny-vit", 64, seed=0), checkpoint)
    report = run_video_demo(checkpoint, tmp_path / "demo", frames=40, width=128)
    for name in ("annotated.mp4", "frames.jsonl", "events.jsonl", "summary.json", "video_demo.json", "synthetic.mp4"):
        assert (tmp_path / "demo" / name).is_file(), name
    assert report["frames"] == 40 and 0 <= report["events"]["precision"] <= 1 and report["events"]["truth"] >= 2
    assert report["events"]["matched"] <= report["events_any_track"]["matched"]
    assert sum(report["false_events"].values()) == report["events"]["predicted"] - report["events"]["matched"]
    assert "event precision" in video_demo_line(report)
    # the stream's events are what its own frame lines replay to (the reference the thresholds are chosen on)
    from defr.video.evaluation import replay_events
    from defr.video.event_files import EVENT_KEYS, read_events, read_frame_lines
    from defr.video.events import EventConfig
    from defr.video.smoothing import SmoothingConfig

    t = report["thresholds"]
    names = list(load_detector(checkpoint).meta.class_names)
    replayed = replay_events(read_frame_lines(tmp_path / "demo" / "frames.jsonl"), names, SmoothingConfig(),
                             EventConfig(on=t["on"], off=t["off"], min_frames=t["min_frames"]))  # fmt: skip
    written = read_events(tmp_path / "demo" / "events.jsonl", predicted=True)
    assert [{k: e[k] for k in (*EVENT_KEYS, "peak_score")} for e in replayed] == [dict(e) for e in written]
    assert (tmp_path / "demo" / "timeline.png").is_file() and report["frame_hicodet"]["frames"] == 40


def test_video_demo_refuses_to_choose_thresholds_on_the_scored_clip(tmp_path):
    from defr.demo import run_video_demo
    from defr.errors import ConfigError

    with pytest.raises(ConfigError, match="scored clip's seed 3"):
        run_video_demo(tmp_path / "never-read.safetensors", tmp_path / "demo", seed=3, validation_seeds=[1003, 3])


def test_crowded_video_brings_people_close(tmp_path):
    """Crowded lanes reach into each other: people come closer than in ``default``."""
    gaps = {}
    for setting in ("default", "crowded"):
        clip = generate_synthetic_video(
            tmp_path / f"{setting}.mp4", frames=90, fps=10, width=128, seed=1, setting=setting
        )
        closest = []
        for line in jsonl(clip.detections):
            xs = [
                (b[0] + b[2]) / 2
                for b, label in zip(line["boxes"], line["labels"], strict=True)
                if label == vocab.PERSON
            ]
            if len(xs) >= 2:
                closest.append(min(abs(a - b) for i, a in enumerate(xs) for b in xs[i + 1 :]))
            assert all(0 <= b[0] <= b[2] < 128 for b in line["boxes"])
        gaps[setting] = min(closest) if closest else float("inf")
    assert gaps["crowded"] < gaps["default"]
    with pytest.raises(ConfigError, match="crowded"):
        generate_synthetic_video(tmp_path / "x.mp4", frames=20, width=128, setting="busy")


@pytest.mark.slow
def test_crowded_video_has_the_training_images_scale(tmp_path):
    """At the training images' long side, the video's people and objects have the still images' size relative
    to the frame (median width and height within a factor 1.5, areas 1.5²), and up to three people share a frame."""
    from defr.data import generate_synthetic
    from defr.demo import training_scale
    from defr.video.oracle import video_scale_stats

    stills = training_scale(generate_synthetic(tmp_path / "d", images=80, seed=0, size=128, setting="crowded"))
    clip = generate_synthetic_video(tmp_path / "c.mp4", frames=300, fps=15, width=128, seed=0, setting="crowded")
    lines, truth = jsonl(clip.detections), jsonl(clip.events)
    video = video_scale_stats(lines, truth, 128, 96)
    for key, factor in (("human_width", 1.5), ("human_height", 1.5), ("human_area", 2.25), ("object_area", 2.25)):
        ratio = video[key]["median"] / stills[key]["median"]
        assert 1 / factor <= ratio <= factor, (key, video[key], stills[key])
    assert max(line["labels"].count(vocab.PERSON) for line in lines) == 3
