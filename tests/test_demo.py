"""``defr demo`` end to end at a toy size: every stage runs and reports its metrics."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from defr.cli import main


@pytest.mark.slow
def test_demo_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    args = [
        "demo",
        "--output",
        str(out),
        "--images",
        "60",
        "--image-size",
        "64",
        "--epochs",
        "1",
        "--video-frames",
        "30",
        "--video-seeds",
        "2",
    ]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "demo.json").read_text())
    assert 0.0 <= report["classification"]["mAP"] <= 1.0
    assert 0.0 < report["classification"]["chance_mAP"] < 1.0
    assert 0.0 <= report["detection"]["full"] <= 1.0
    assert report["export"]["max_abs_diff_pair"] <= 1e-4
    assert list((out / "detection").glob("*.png"))
    assert (out / "export" / "model.onnx").is_file()
    assert 0.0 <= report["video"]["events"]["recall"] <= 1.0 and (out / "video" / "annotated.mp4").is_file()
    assert "mAP" in r.output and "event precision" in r.output
    # the setting, the mask effect on its own test split, the video's own scoring and scale
    assert report["config"]["setting"] == "crowded"
    effect = report["detection"]["mask_effect"]
    assert set(effect["all"]) == {"hard", "released", "none"} and effect["images_two_plus_people"] <= effect["images"]
    video = report["video"]
    chosen = report["video_thresholds"]
    assert video["size"][0] == 64 and chosen["validation_seeds"] == [1000, 1001]
    assert video["thresholds"] == {k: chosen[k] for k in ("on", "off", "min_frames")}  # one choice for every seed
    assert chosen["validation"]["truth"] > 0
    assert video["frame_hicodet"]["frames"] == 30 and len(video["event_table"]) == video["events"]["truth"]
    assert video["scale"]["scenes"] > 0 and video["training_scale"]["scenes"] > 0
    assert (out / "video" / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert [row["seed"] for row in report["video_seeds"]] == [0, 1]
    assert "mask effect" in r.output and "frame-level HICO-DET" in r.output
    # the packaged weights: recorded by name and SHA-256, scored zero-shot before fine-tuning
    assert report["pretrained"]["name"] == "defr-synth" and len(report["pretrained"]["sha256"]) == 64
    assert 0.0 <= report["zero_shot"]["mAP"] <= 1.0 and "held_out_mAP" in report["classification"]
    assert "zero-shot" in r.output


def test_images_with_people_counts_distinct_people():
    """Image a: one person in two pairs (re-annotated 1 px off: one entity); image b: two people → only b."""
    import numpy as np

    from defr.data.hicodet import HICODetAnnotations
    from defr.eval.mask_effect import images_with_people

    one = np.array([[1, 1, 20, 40], [1, 1, 20, 41]], dtype=float)
    two = np.array([[1, 1, 20, 40], [50, 1, 70, 40]], dtype=float)
    objects = np.array([[21, 1, 40, 20], [71, 1, 90, 20]], dtype=float)
    ann = HICODetAnnotations(
        filenames=["a.jpg", "b.jpg"],
        sizes=np.array([[100, 50], [100, 50]]),
        boxes_h=[one, two],
        boxes_o=[objects, objects],
        hoi=[np.array([0, 1]), np.array([0, 0])],
        object=[np.array([1, 1]), np.array([1, 1])],
        class_objects=np.array([1, 1]),
        rare=[],
        non_rare=[0, 1],
    )
    kept = images_with_people(ann)
    assert kept.filenames == ["b.jpg"] and kept.sizes.tolist() == [[100, 50]] and kept.boxes_h[0] is two
