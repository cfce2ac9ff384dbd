"""11-point AP and the HICO classification metrics: hand-computed cases, a model run, the ``evaluate`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from defr.cli import main
from defr.eval.ap import RECALL_THRESHOLDS, average_precision_11, voc_ap_11
from defr.eval.classification import dataset_columns, evaluate_model, hico_metrics, known_object_images

NAN = float("nan")

# --------------------------------------------------------------------------- 11-point AP


def test_voc_ap_11_hand_computed():
    assert voc_ap_11([0.5, 1.0], [1.0, 1.0]) == 1.0
    # TP, FP, TP of 2 positives: recall .5 .5 1, precision 1 .5 2/3 → t ≤ .5: 1, t ≥ .6: 2/3
    assert voc_ap_11([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3]) == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert voc_ap_11([0.5], [1.0]) == pytest.approx(6 / 11)  # recall never reaches t ≥ .6: those count 0
    assert voc_ap_11([], []) == 0.0


def test_recall_thresholds_follow_matlab_colon():
    """0:0.1:1 in MATLAB: t(4) is 0.30000000000000004 (so recall 3/10 misses it) but t(8) is exactly 0.7."""
    assert RECALL_THRESHOLDS[3] > 3 / 10 and RECALL_THRESHOLDS[7] == 7 / 10
    assert average_precision_11([3, 2, 1], [True] * 3, num_positives=10) == pytest.approx(3 / 11)
    assert average_precision_11(np.arange(7, 0, -1), [True] * 7, num_positives=10) == pytest.approx(8 / 11)


def test_average_precision_ranks_by_score_and_keeps_ties_in_input_order():
    assert average_precision_11([0.1, 0.9, 0.5], [False, True, True], 2) == 1.0
    assert average_precision_11([0.5, 0.5], [False, True], 1) == pytest.approx(0.5)
    assert average_precision_11([0.5, 0.5], [True, False], 1) == 1.0
    with pytest.raises(ValueError, match="num_positives"):
        average_precision_11([0.5], [False], 0)
    with pytest.raises(ValueError, match="equal length"):
        voc_ap_11([0.5, 1.0], [1.0])


def test_average_precision_matches_loop_reference():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 5, 30).astype(float)  # many ties
        positive = rng.random(30) < 0.3
        num_positives = int(positive.sum()) + int(rng.integers(0, 3))  # some positives never ranked
        if num_positives == 0:
            continue
        ranked = sorted(range(30), key=lambda i: -scores[i])
        tp, points = 0, []
        for k, i in enumerate(ranked, start=1):
            tp += positive[i]
            points.append((tp / num_positives, tp / k))
        expected = sum(max([p for r, p in points if r >= t], default=0.0) for t in RECALL_THRESHOLDS) / 11
        assert average_precision_11(scores, positive, num_positives) == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------- HICO metrics

# 6 images × 4 classes; classes 0 and 1 share object 0, class 2 has object 1, class 3 object 2
LABELS = np.array(
    [
        [1, -1, NAN, -1],
        [-1, -1, 1, 1],
        [0, NAN, -1, NAN],
        [NAN, 0, 1, -1],
        [1, -1, NAN, -1],
        [-1, NAN, -1, 1],
    ]
)
SCORES = np.array(
    [
        [0.9, 0.1, 0.5, 0.1],
        [0.8, 0.2, 0.2, 0.9],
        [0.99, 0.3, 0.3, 0.5],
        [0.7, 0.4, 0.9, 0.3],
        [0.6, 0.5, 0.8, 0.2],
        [0.1, 0.6, 0.1, 0.8],
    ]
)
# class 0: image 2 (ambiguous) is not ranked; image 3 (NaN) is a negative: T F F T F → (6·1 + 5·.5) / 11
# class 2: T F F F T F → (6·1 + 5·.4) / 11;  class 3: perfect;  class 1: no positive → None
AP = [8.5 / 11, None, 8 / 11, 1.0]
# known-object: class 0 drops image 3 (no class of object 0 is ±1 there): T F T F → (6 + 5·2/3) / 11;
# class 2 keeps images 1, 2, 3, 5: T F T F → the same
KO_AP = [28 / 33, None, 28 / 33, 1.0]


def test_hico_metrics_hand_computed():
    few_shot = {1: [1], 5: [1, 2], 10: [0, 2, 3]}
    metrics = hico_metrics(SCORES, LABELS, [0, 0, 1, 2], few_shot)
    assert metrics["per_class_ap"] == [pytest.approx(a) if a is not None else None for a in AP]
    assert metrics["num_classes_evaluated"] == 3
    assert metrics["mAP"] == pytest.approx(np.mean([8.5 / 11, 8 / 11, 1.0]))
    assert metrics["few@1"] is None  # its only class has no positives
    assert metrics["few@5"] == pytest.approx(8 / 11)
    assert metrics["few@10"] == pytest.approx(metrics["mAP"])
    assert metrics["ko_mAP"] == pytest.approx(np.mean([a for a in KO_AP if a is not None]))
    assert json.loads(json.dumps(metrics, allow_nan=False)) == metrics


def test_hico_metrics_without_objects_or_few_shot_lists():
    metrics = hico_metrics(SCORES, LABELS, class_objects=None, few_shot={1: []})
    assert metrics["ko_mAP"] is None
    assert metrics["few@1"] is None and metrics["few@5"] is None and metrics["few@10"] is None
    assert metrics["mAP"] == pytest.approx(np.mean([8.5 / 11, 8 / 11, 1.0]))


def test_known_object_images_groups_classes_by_object():
    known = known_object_images(LABELS, [0, 0, 1, -1])
    np.testing.assert_array_equal(known[:, 0], [True, True, False, False, True, True])
    np.testing.assert_array_equal(known[:, 0], known[:, 1])
    np.testing.assert_array_equal(known[:, 3], np.abs(LABELS[:, 3]) == 1)  # unknown object: the class alone


def test_hico_metrics_bad_input():
    with pytest.raises(ValueError, match="both be"):
        hico_metrics(SCORES[:, :3], LABELS)
    with pytest.raises(ValueError, match="NaN or inf"):
        hico_metrics(np.where(LABELS == 1, NAN, SCORES), LABELS)
    with pytest.raises(ValueError, match=r"found \[2.0\]"):
        hico_metrics(SCORES, np.where(LABELS == 1, 2.0, LABELS))
    with pytest.raises(ValueError, match="one object per class"):
        hico_metrics(SCORES, LABELS, class_objects=[0, 1])


def test_dataset_columns_by_name():
    assert dataset_columns(["a b", "c d", "e f"], ["e f", "a b"]) == [2, 0]
    with pytest.raises(ValueError, match=r"no output for 1 dataset class\(es\): \['x y'\]"):
        dataset_columns(["a b"], ["a b", "x y"])


# --------------------------------------------------------------------------- a model on a dataset


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from defr.data import generate_synthetic

    return generate_synthetic(tmp_path_factory.mktemp("synth") / "data", images=24, seed=2, size=64)


def synth_test_split(model, root):
    from defr.data import build_dataset

    spec = model.cfg.backbone
    return build_dataset("synth", root, "test", spec.image_size, spec.mean, spec.std)


def test_evaluate_model_equals_metrics_of_direct_logits(tiny_model, synth_root):
    dataset = synth_test_split(tiny_model, synth_root)
    tiny_model.train()
    metrics = evaluate_model(tiny_model, dataset, batch_size=2)
    assert tiny_model.training  # mode restored

    tiny_model.eval()
    with torch.no_grad():
        logits = tiny_model(torch.stack([dataset[i][0] for i in range(len(dataset))])).numpy()
    columns = [tiny_model.cfg.class_names.index(name) for name in dataset.class_names]
    expected = hico_metrics(logits[:, columns], dataset.labels, dataset.class_objects, dataset.few_shot)
    assert metrics.keys() == expected.keys()
    for key in ("mAP", "few@1", "few@5", "few@10", "ko_mAP"):
        assert (metrics[key] is None) == (expected[key] is None)
        assert metrics[key] is None or metrics[key] == pytest.approx(expected[key], abs=1e-6)
    assert 0 < metrics["num_classes_evaluated"] <= len(dataset.class_names)
    assert json.loads(json.dumps(metrics, allow_nan=False)) == metrics


def test_evaluate_command(tmp_path, clip_layout_model, synth_root):
    from defr.model import save_checkpoint

    checkpoint = tmp_path / "model.safetensors"
    save_checkpoint(clip_layout_model, checkpoint)
    out = tmp_path / "metrics.json"
    args = ["evaluate", "--checkpoint", str(checkpoint), "--data-root", str(synth_root), "--batch-size", "3"]
    run = CliRunner().invoke(main, [*args, "--dataset", "synth", "--json", str(out)])
    assert run.exit_code == 0, run.output
    assert "mAP" in run.output and "few@10" in run.output and "classes evaluated" in run.output
    written = json.loads(out.read_text())
    expected = evaluate_model(clip_layout_model, synth_test_split(clip_layout_model, synth_root))
    assert written["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    assert written["split"] == "test" and written["dataset"] == "synth"

    # the released layout: {"model_state_dict": {"module.visual_encoder.visual.*", "module.classifier", ...}}
    tower = {
        k.removeprefix("backbone."): v for k, v in clip_layout_model.state_dict().items() if k.startswith("backbone.")
    }
    state = {f"module.visual_encoder.visual.{k}": v for k, v in tower.items()}
    state["module.classifier"], state["module.logit_scale"] = clip_layout_model.classifier.detach(), torch.tensor(4.61)
    official = tmp_path / "defr_official.pth"
    torch.save({"model_state_dict": state}, official)
    run = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(official), "--dataset", "synth"] + args[3:])
    assert run.exit_code == 0, run.output
    assert "defr_official.pth on synth test" in run.output

    run = CliRunner().invoke(main, [*args, "--dataset", "jsonl"])
    assert run.exit_code == 1 and "classes.json: no such file" in run.output
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    bad = ["evaluate", "--checkpoint", str(tmp_path / "bad.safetensors"), "--dataset", "synth"]
    run = CliRunner().invoke(main, [*bad, "--data-root", str(synth_root)])
    assert run.exit_code == 1 and "not a DEFR checkpoint" in run.output
