"""``defr box-noise``: GT boxes as detections, box noise scaled by box size, mAP against the noise ratio."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from defr import vocab
from defr.cli import main
from defr.data import generate_synthetic
from defr.data.hicodet import HICODetAnnotations
from defr.errors import ConfigError
from defr.eval.gt_detections import add_box_noise, gt_detections, noisy_gt_detections
from defr.model import create_model, save_checkpoint


def test_noise_is_scaled_by_box_size():
    boxes = np.array([[0.0, 0.0, 10.0, 100.0], [5.0, 5.0, 5.0, 5.0]])
    eps = np.ones((2, 4))
    noisy = add_box_noise(boxes, 0.1, eps)
    assert noisy[0].tolist() == pytest.approx([1.0, 10.0, 11.0, 110.0])
    assert noisy[1].tolist() == [5.0, 5.0, 5.0, 5.0]  # a zero-size box has zero noise
    assert add_box_noise(boxes, 0.0, np.random.default_rng(0).standard_normal((2, 4))).tolist() == boxes.tolist()
    with pytest.raises(ValueError, match=r"must be in \[0, 10\]"):
        add_box_noise(boxes, -0.1, eps)


def test_crossing_corners_are_reordered():
    noisy = add_box_noise(np.array([[0.0, 0.0, 10.0, 10.0]]), 1.0, np.array([[2.0, 0.0, -2.0, 0.0]]))
    assert noisy.tolist() == [[-10.0, 0.0, 20.0, 10.0]]


def test_gt_detections_are_distinct_zero_based_boxes():
    dets = gt_detections(
        np.array([[1, 1, 10, 10], [1, 1, 10, 10]]), np.array([[5, 5, 20, 20], [30, 30, 40, 40]]), np.array([3, 7])
    )
    assert dets.boxes.tolist() == [[0, 0, 9, 9], [4, 4, 19, 19], [29, 29, 39, 39]]
    assert dets.labels.tolist() == [vocab.PERSON, 3, 7]
    assert dets.scores.tolist() == [1.0, 1.0, 1.0]


def test_same_draws_for_every_ratio():
    data = HICODetAnnotations(
        filenames=["a.jpg"],
        sizes=np.array([[64, 64]]),
        boxes_h=[np.array([[1.0, 1, 11, 21]])],
        boxes_o=[np.zeros((0, 4))],
        hoi=[np.zeros(0, np.int64)],
        object=[np.zeros(0, np.int64)],
        class_objects=np.array([3]),
        rare=[],
        non_rare=[0],
    )
    small, large = (noisy_gt_detections(data, r, seed=3)["a.jpg"].boxes for r in (0.1, 0.2))
    base = np.array([[0, 0, 10, 20]])
    assert np.allclose(large - base, 2 * (small - base), atol=1e-5)


@pytest.mark.slow
def test_box_noise_cli_on_synthetic_data(tmp_path):
    root = generate_synthetic(tmp_path / "synth", images=40, seed=0, size=64)
    classes = json.loads((root / "instances_test2015.json").read_text())
    names = [f"{classes['verbs'][v]} {classes['objects'][o]}" for _, o, v in classes["correspondence"]]
    ckpt = tmp_path / "model.safetensors"
    save_checkpoint(create_model("tiny-vit", 64, names, seed=None), ckpt)
    out = tmp_path / "noise"
    args = ["box-noise", "--checkpoint", str(ckpt), "--annotations", str(root / "instances_test2015.json")]
    images = str(root / "images" / "test2015")
    r = CliRunner().invoke(main, [*args, "--images", images, "--ratios", "0,0.3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "box_noise.json").read_text())
    assert report["mask_mode"] == "hard"
    r = CliRunner().invoke(
        main, [*args, "--images", images, "--ratios", "0", "--mask-mode", "released", "--out", str(out)]
    )
    assert r.exit_code == 0 and json.loads((out / "box_noise.json").read_text())["mask_mode"] == "released"
    r = CliRunner().invoke(main, [*args, "--images", images, "--ratios", "0,0.3", "--out", str(out)])
    report = json.loads((out / "box_noise.json").read_text())
    assert [row["ratio"] for row in report["rows"]] == [0.0, 0.3]
    assert all(0.0 <= row["full"] <= 1.0 for row in report["rows"])
    assert (out / "box_noise.png").stat().st_size > 0
    r = CliRunner().invoke(main, [*args, "--images", str(tmp_path), "--out", str(out)])
    assert r.exit_code != 0 and "missing" in r.output
    r = CliRunner().invoke(main, [*args, "--images", str(root), "--ratios", "0,-1", "--out", str(out)])
    assert r.exit_code != 0 and "ratios" in r.output
    released = [*args, "--images", images, "--ratios", "0", "--mask-mode", "released", "--out", str(out)]
    r = CliRunner().invoke(main, released)
    assert r.exit_code == 0 and json.loads((out / "box_noise.json").read_text())["mask_mode"] == "released"


@pytest.mark.parametrize("ratio", [1e308, float("nan"), 10.5])
def test_a_noise_ratio_past_ten_box_sizes_is_refused_naming_the_option(tmp_path, ratio):
    """Round-5 probe: --ratios 1e308 made the boxes inf, and the run failed blaming an image's boxes after
    creating an empty --out folder."""
    with pytest.raises(ConfigError, match=r"noise ratio must be in \[0, 10\]"):
        add_box_noise(np.array([[0.0, 0.0, 10.0, 10.0]]), ratio, np.ones((1, 4)))
    args = ["box-noise", "--ratios", f"0,{ratio}", "--checkpoint", "c", "--annotations", "a", "--images", "i"]
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and "Invalid value for '--ratios': ratios must be numbers in [0, 10]" in r.output
    assert not (tmp_path / "out").exists()
