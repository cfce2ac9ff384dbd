"""HICO-DET evaluation: hand-made cases, a loop-by-loop port of the official MATLAB code as reference, the readers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner

from defr.cli import main
from defr.data.hico import DatasetError
from defr.data.hicodet import load_annotations
from defr.eval.ap import RECALL_THRESHOLDS
from defr.eval.hicodet import ResultsError, box_iou_inclusive, evaluate_hicodet, load_results

FAR = [500.0, 500.0, 600.0, 600.0]  # an object box far from everything else


# --------------------------------------------------------------------------- helpers


def instances(images: list[list[tuple]], class_objects: list[int], rare: list[int]) -> dict:
    """An instances JSON dict; images: per image a list of (hoi, box_h, box_o), boxes 1-based inclusive."""
    return {
        "annotation": [
            {
                "boxes_h": [list(map(float, h)) for _, h, _ in pairs],
                "boxes_o": [list(map(float, o)) for _, _, o in pairs],
                "hoi": [c for c, _, _ in pairs],
                "object": [class_objects[c] for c, _, _ in pairs],
                "verb": [0 for _ in pairs],
            }
            for pairs in images
        ],
        "filenames": [f"img{i}.jpg" for i in range(len(images))],
        "size": [[640, 480] for _ in images],
        "correspondence": [[c, o, 0] for c, o in enumerate(class_objects)],
        "rare": rare,
        "non_rare": [c for c in range(len(class_objects)) if c not in rare],
    }


def write_annotations(tmp_path, data: dict):
    path = tmp_path / "instances_test2015.json"
    path.write_text(json.dumps(data))
    return load_annotations(path)


def detections(*dets: tuple) -> dict:
    """Results from (image index, hoi, box_h, box_o, score) tuples, boxes 0-based."""
    results: dict = {}
    for image, hoi, box_h, box_o, score in dets:
        entry = results.setdefault(f"img{image}.jpg", {"boxes_h": [], "boxes_o": [], "hoi": [], "scores": []})
        entry["boxes_h"].append(list(box_h))
        entry["boxes_o"].append(list(box_o))
        entry["hoi"].append(hoi)
        entry["scores"].append(score)
    return results


def zero_based(box) -> list[float]:
    return [x - 1.0 for x in box]


def gt_as_detections(ann) -> dict:
    return {
        name: {"boxes_h": (h - 1).tolist(), "boxes_o": (o - 1).tolist(), "hoi": c.tolist(), "scores": [1.0] * len(c)}
        for name, h, o, c in zip(ann.filenames, ann.boxes_h, ann.boxes_o, ann.hoi, strict=True)
    }


def reference_iou(a, b) -> float:
    """VOCevaldet_bboxpair.m's overlap of two inclusive boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - iw * ih
    return iw * ih / union


def reference_evaluate(ann, results: dict, setting: str) -> list[float | None]:
    """Per-class AP by eval_one.m and VOCevaldet_bboxpair.m, loop for loop (slow)."""
    gt = {c: {} for c in range(ann.num_classes)}  # class → image → list of (box_h, box_o)
    objects_in = [set(o.tolist()) for o in ann.object]
    for i in range(ann.num_images):
        for h, o, c in zip(ann.boxes_h[i], ann.boxes_o[i], ann.hoi[i], strict=True):
            gt[int(c)].setdefault(i, []).append((h.tolist(), o.tolist()))
    per_class_dets: dict[int, list] = {c: [] for c in range(ann.num_classes)}
    for i, name in enumerate(ann.filenames):
        entry = results.get(name, {"hoi": []})
        for k, c in enumerate(entry["hoi"]):
            if setting == "known-object" and int(ann.class_objects[c]) not in objects_in[i]:
                continue
            box_h = [x + 1 for x in entry["boxes_h"][k]]  # zero-based to one-based, as eval_one.m
            box_o = [x + 1 for x in entry["boxes_o"][k]]
            per_class_dets[c].append((i, box_h, box_o, entry["scores"][k]))
    aps = []
    for c in range(ann.num_classes):
        npos = sum(len(pairs) for pairs in gt[c].values())
        if npos == 0:
            aps.append(None)
            continue
        dets = sorted(per_class_dets[c], key=lambda d: -d[3])  # Python's sort is stable, like MATLAB's
        taken = {i: [False] * len(pairs) for i, pairs in gt[c].items()}
        tp, fp = [], []
        for i, box_h, box_o, _ in dets:
            ov_max, j_max = -math.inf, None
            for j, (gt_h, gt_o) in enumerate(gt[c].get(i, [])):
                ov = min(reference_iou(box_h, gt_h), reference_iou(box_o, gt_o))
                if ov > ov_max:
                    ov_max, j_max = ov, j
            hit = ov_max >= 0.5 and not taken[i][j_max]
            if hit:
                taken[i][j_max] = True
            tp.append(int(hit))
            fp.append(int(not hit))
        rec, prec, ctp, cfp = [], [], 0, 0
        for t, f in zip(tp, fp, strict=True):
            ctp, cfp = ctp + t, cfp + f
            rec.append(ctp / npos)
            prec.append(ctp / (ctp + cfp))
        ap = 0.0
        for t in RECALL_THRESHOLDS:
            ap += max([p for r, p in zip(rec, prec, strict=True) if r >= t], default=0.0) / 11
        aps.append(ap)
    return aps


def random_case(seed: int, images: int = 12, classes: int = 5) -> tuple[dict, dict]:
    """Crowded GT (pairs of one class near each other) and detections with duplicates, jitter and tied scores."""
    rng = np.random.default_rng(seed)
    class_objects = [0, 0, 1, 2, 2][:classes]
    anchors = rng.uniform(0, 200, (6, 2))
    gt_images, dets = [], []

    def box(centre, size, jitter):
        x, y = centre + rng.normal(0, jitter, 2)
        return [round(x), round(y), round(x + size), round(y + size)]

    for i in range(images):
        pairs = []
        for _ in range(rng.integers(0, 6)):
            c = int(rng.integers(classes))
            pairs.append((c, box(anchors[rng.integers(6)], 40, 4), box(anchors[rng.integers(6)], 30, 4)))
        gt_images.append(pairs)
        for c, h, o in pairs:
            for _ in range(rng.integers(0, 3)):  # duplicates and near misses
                dets.append(
                    (i, c, box(np.array(h[:2]), 40, 6), box(np.array(o[:2]), 30, 6), int(rng.integers(10)) / 10)
                )
        for _ in range(rng.integers(0, 4)):  # clutter of random classes
            c = int(rng.integers(classes))
            h, o = box(anchors[rng.integers(6)], 40, 10), box(anchors[rng.integers(6)], 30, 10)
            dets.append((i, c, h, o, int(rng.integers(10)) / 10))
    return instances(gt_images, class_objects, rare=[0, 3]), detections(*dets)


def assert_aps_equal(fast: list, slow: list) -> None:
    assert [a is None for a in fast] == [b is None for b in slow]
    np.testing.assert_allclose([a for a in fast if a is not None], [b for b in slow if b is not None], atol=1e-12)


# --------------------------------------------------------------------------- the +1 convention


def test_iou_uses_inclusive_pixels():
    gt = np.array([[1.0, 1.0, 10.0, 10.0]] * 4)
    other = np.array([[1.0, 1.0, 20.0, 10.0], [10.0, 1.0, 20.0, 10.0], [11.0, 1.0, 20.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
    np.testing.assert_allclose(box_iou_inclusive(gt, other), [100 / 200, 10 / 200, 0.0, 1.0])


@pytest.mark.parametrize(
    ("det_h", "expected_ap"),
    [
        ([0, 0, 9, 9], 1.0),  # the GT box in 0-based pixels: IoU 1
        ([0, 0, 19, 9], 1.0),  # 1-based [1, 1, 20, 10]: 100 / 200 = 0.5, a hit
        ([0, 0, 20, 9], 0.0),  # 1-based [1, 1, 21, 10]: 100 / 210 < 0.5
        ([1, 1, 20, 10], 0.0),  # the 1-based numbers given as 0-based: shifted one pixel, 81 / 219
    ],
)
def test_detections_get_plus_one_before_iou(tmp_path, det_h, expected_ap):
    ann = write_annotations(tmp_path, instances([[(0, [1, 1, 10, 10], FAR)]], [0], rare=[]))
    metrics = evaluate_hicodet(ann, detections((0, 0, det_h, zero_based(FAR), 0.9)))
    assert metrics["per_class_ap"] == [expected_ap]


# --------------------------------------------------------------------------- matching and AP


def test_duplicate_detection_is_a_false_positive(tmp_path):
    a, b = [1, 1, 50, 50], [201, 201, 250, 250]
    ann = write_annotations(tmp_path, instances([[(0, a, FAR), (0, b, FAR)]], [0], rare=[]))
    o = zero_based(FAR)
    results = detections((0, 0, zero_based(a), o, 0.9), (0, 0, zero_based(a), o, 0.8), (0, 0, zero_based(b), o, 0.7))
    # TP, FP, TP: recall .5 .5 1, precision 1 .5 2/3 → (6·1 + 5·2/3) / 11
    assert evaluate_hicodet(ann, results)["per_class_ap"] == [pytest.approx(28 / 33)]


def test_taken_best_pair_is_not_replaced_by_the_next_best(tmp_path):
    """As VOCevaldet_bboxpair.m: a detection whose best GT pair is taken is a FP even if another pair overlaps ≥ 0.5."""
    a, b = [1, 1, 100, 100], [11, 1, 110, 100]  # IoU(a, b) = 0.82
    ann = write_annotations(tmp_path, instances([[(0, a, FAR), (0, b, FAR)]], [0], rare=[]))
    near_a = [2, 0, 101, 99]  # 0-based; IoU 0.96 with a, 0.85 with b
    results = detections((0, 0, zero_based(a), zero_based(FAR), 0.9), (0, 0, near_a, zero_based(FAR), 0.8))
    assert evaluate_hicodet(ann, results)["per_class_ap"] == [pytest.approx(6 / 11)]


def test_tied_overlaps_go_to_the_first_gt_pair(tmp_path):
    h1, h2, o1, o2 = [1, 1, 100, 100], [26, 1, 125, 100], [201, 1, 300, 100], [226, 1, 325, 100]  # IoU 0.6
    ann = write_annotations(tmp_path, instances([[(0, h1, o2), (0, h2, o1)]], [0], rare=[]))
    # the first detection overlaps both pairs by min(1, 0.6): it takes the first; the second wants that one too
    results = detections((0, 0, zero_based(h1), zero_based(o1), 0.9), (0, 0, zero_based(h1), zero_based(o2), 0.8))
    assert evaluate_hicodet(ann, results)["per_class_ap"] == [pytest.approx(6 / 11)]


def test_tied_scores_keep_image_order(tmp_path):
    box = [1, 1, 10, 10]
    ann = write_annotations(tmp_path, instances([[(0, box, FAR)], [(0, box, FAR)]], [0], rare=[]))
    miss, hit = [100, 100, 120, 120], zero_based(box)
    fp_first = detections((0, 0, miss, zero_based(FAR), 0.5), (1, 0, hit, zero_based(FAR), 0.5))
    tp_first = detections((0, 0, hit, zero_based(FAR), 0.5), (1, 0, miss, zero_based(FAR), 0.5))
    assert evaluate_hicodet(ann, fp_first)["per_class_ap"] == [pytest.approx(6 * 0.5 / 11)]  # rec 0 .5, prec 0 .5
    assert evaluate_hicodet(ann, tp_first)["per_class_ap"] == [pytest.approx(6 * 1.0 / 11)]  # rec .5 .5, prec 1 .5


def test_classes_without_detections_or_gt_and_the_rare_split(tmp_path):
    h, o = [1, 1, 10, 10], [21, 21, 30, 30]
    images = [[(0, h, o), (1, h, o)], [(2, h, o)]]
    ann = write_annotations(tmp_path, instances(images, [0, 0, 1, 1], rare=[0, 3]))
    det_h, det_o = zero_based(h), zero_based(o)
    results = detections((0, 0, det_h, det_o, 0.9), (1, 2, det_h, det_o, 0.8), (0, 3, det_h, det_o, 0.7))
    metrics = evaluate_hicodet(ann, results)
    assert metrics["per_class_ap"] == [1.0, 0.0, 1.0, None]  # class 1: GT, no detection; class 3: no GT
    assert metrics["classes_without_gt"] == [3]
    assert metrics["num_gt"] == [1, 1, 1, 0]
    assert metrics["full"] == pytest.approx(2 / 3)
    assert metrics["rare"] == pytest.approx(1.0)  # class 3 is rare but has no GT: left out
    assert metrics["non_rare"] == pytest.approx(0.5)


def test_known_object_drops_detections_in_images_without_the_object(tmp_path):
    h, o = [1, 1, 10, 10], [21, 21, 30, 30]
    # class 0 and 1 share object 0; class 2 has object 1; image 1 holds only object 1
    ann = write_annotations(tmp_path, instances([[(0, h, o)], [(2, h, o)], [(1, h, o)]], [0, 0, 1], rare=[]))
    det_h, det_o = zero_based(h), zero_based(o)
    results = detections(
        (1, 0, det_h, det_o, 0.9),  # class 0 in an image without object 0: dropped in known-object
        (0, 0, det_h, det_o, 0.8),
        (2, 0, det_h, det_o, 0.95),  # class 0 in an image with object 0 (via class 1): kept, a FP
        (1, 2, det_h, det_o, 0.5),
    )
    default = evaluate_hicodet(ann, results)["per_class_ap"]
    known = evaluate_hicodet(ann, results, setting="known-object")["per_class_ap"]
    # default: FP, FP, TP → precision at recall 1 is 1/3; known-object: FP, TP → 1/2
    assert default == [pytest.approx(1 / 3), 0.0, 1.0]
    assert known == [pytest.approx(1 / 2), 0.0, 1.0]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("setting", ["default", "known-object"])
def test_matches_loop_reference_on_crowded_random_cases(tmp_path, seed, setting):
    data, results = random_case(seed)
    ann = write_annotations(tmp_path, data)
    fast = evaluate_hicodet(ann, results, setting)["per_class_ap"]
    assert_aps_equal(fast, reference_evaluate(ann, results, setting))
    assert any(ap is not None and 0 < ap < 1 for ap in fast)  # the case exercises partial matches


def test_unknown_setting():
    with pytest.raises(ValueError, match="setting must be one of"):
        evaluate_hicodet(None, {}, setting="ko")


# --------------------------------------------------------------------------- real and synthetic annotations


def test_gt_as_detections_on_real_annotations(shared_dir):
    ann = load_annotations(shared_dir / "hicodet" / "instances_test2015.json")
    raw = json.loads((shared_dir / "hicodet" / "instances_test2015.json").read_text())
    assert sum(ann.num_gt()) == sum(len(a["hoi"]) for a in raw["annotation"])
    assert (len(ann.rare), len(ann.non_rare), ann.num_classes) == (len(raw["rare"]), len(raw["non_rare"]), 600)
    for setting in ("default", "known-object"):
        metrics = evaluate_hicodet(ann, gt_as_detections(ann), setting)
        assert (metrics["full"], metrics["rare"], metrics["non_rare"]) == (1.0, 1.0, 1.0)
        assert json.loads(json.dumps(metrics, allow_nan=False)) == metrics


def test_matches_loop_reference_on_real_annotations(shared_dir):
    ann = load_annotations(shared_dir / "hicodet" / "instances_test2015.json")
    rng = np.random.default_rng(0)
    results = {}
    for name, h, o, c in zip(ann.filenames[:1500], ann.boxes_h, ann.boxes_o, ann.hoi, strict=False):
        keep = rng.random(len(c)) < 0.8
        noisy_h = h[keep] - 1 + rng.normal(0, 4, h[keep].shape)
        noisy_h = np.concatenate(
            [np.minimum(noisy_h[:, :2], noisy_h[:, 2:]), np.maximum(noisy_h[:, :2], noisy_h[:, 2:])], 1
        )
        clutter = rng.integers(0, 600, 3)
        results[name] = {
            "boxes_h": noisy_h.tolist() + [[0, 0, 50, 50]] * 3,
            "boxes_o": (o[keep] - 1).tolist() + [[60, 60, 90, 90]] * 3,
            "hoi": c[keep].tolist() + clutter.tolist(),
            "scores": rng.random(int(keep.sum()) + 3).round(2).tolist(),
        }
    for setting in ("default", "known-object"):
        fast = evaluate_hicodet(ann, results, setting)["per_class_ap"]
        assert_aps_equal(fast, reference_evaluate(ann, results, setting))


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from defr.data import generate_synthetic

    return generate_synthetic(tmp_path_factory.mktemp("synth") / "data", images=40, seed=1, size=64)


def test_gt_as_detections_on_synthetic_annotations(synth_root):
    raw = json.loads((synth_root / "instances_test2015.json").read_text())
    ann = load_annotations(synth_root / "instances_test2015.json")
    assert ann.num_classes == len(raw["correspondence"])
    metrics = evaluate_hicodet(ann, gt_as_detections(ann))
    with_gt = [ap for ap in metrics["per_class_ap"] if ap is not None]
    assert with_gt and all(ap == 1.0 for ap in with_gt)
    assert metrics["classes_without_gt"] == [c for c in range(ann.num_classes) if metrics["num_gt"][c] == 0]
    assert metrics["full"] == 1.0


# --------------------------------------------------------------------------- file readers


def test_load_results_errors(tmp_path):
    h, o = [1, 1, 10, 10], [21, 21, 30, 30]
    ann = write_annotations(tmp_path, instances([[(0, h, o)]], [0, 0], rare=[]))
    good = {"boxes_h": [[0, 0, 9, 9]], "boxes_o": [[20, 20, 29, 29]], "hoi": [1], "scores": [0.5]}
    cases = [
        ({"other.jpg": good}, "other.jpg"),
        ({"img0.jpg": {**good, "scores": [0.5, 0.4]}}, "lengths differ"),
        ({"img0.jpg": {**good, "boxes_h": [[0, 0, 9]]}}, r"boxes must be \[D, 4\]"),
        ({"img0.jpg": {**good, "boxes_o": [[20, 20, 29, 29]] * 2}}, "lengths differ"),
        ({"img0.jpg": {**good, "scores": [float("nan")]}}, "NaN is not a JSON number"),
        ({"img0.jpg": {**good, "hoi": [2]}}, r"hoi ids \[2\] outside \[0, 2\)"),
        ({"img0.jpg": {**good, "hoi": [1.5]}}, "integer class ids"),
        ({"img0.jpg": {k: v for k, v in good.items() if k != "hoi"}}, "needs keys"),
        ([good], "mapping"),
    ]
    path = tmp_path / "results.json"
    for results, message in cases:
        path.write_text(json.dumps(results))
        with pytest.raises(ResultsError, match=message):
            load_results(path, ann)
    path.write_text("{not json")
    with pytest.raises(ResultsError, match="results.json: not valid JSON"):
        load_results(path, ann)
    path.write_text(json.dumps({"img0.jpg": good, "img1.jpg": {"boxes_h": [], "boxes_o": [], "hoi": [], "scores": []}}))
    assert load_results(path, write_annotations(tmp_path, instances([[(0, h, o)], []], [0, 0], rare=[])))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('"scores": [' + "9" * 400 + "]", r"integer 9+\.\.\. \(400 digits\) does not fit in 64 bits"),
        ('"scores": [' + "9" * 5000 + "]", r"integer 9+\.\.\. \(5000 digits\) does not fit in 64 bits"),
        ('"scores": [1e400]', "number 1e400 is out of range"),
        ('"boxes_h": ' + "[" * 100_000 + "]" * 100_000, "nested too deeply to read"),
    ],
)
def test_hostile_json_in_results_is_refused_by_name(tmp_path, text, match):
    """Issue 18 case 14 for the results reader: refused by defr.jsonio, naming the file."""
    ann = write_annotations(tmp_path, instances([[(0, [1, 1, 10, 10], [21, 21, 30, 30])]], [0, 0], rare=[]))
    path = tmp_path / "results.json"
    path.write_text('{"img0.jpg": {' + text + "}}")
    with pytest.raises(ResultsError, match=f"results.json: {match}"):
        load_results(path, ann)


@pytest.mark.parametrize("setting", ["default", "known-object"])
def test_image_results_are_evaluated_without_a_json_round_trip(tmp_path, setting):
    """In-process evaluation takes ``ImageResult``s as they are: the same numbers as their results-format entries."""
    import torch

    from defr.runtime import ImageResult

    data, results = random_case(3)
    ann = write_annotations(tmp_path, data)
    direct = {
        name: ImageResult(
            boxes_h=torch.tensor(e["boxes_h"], dtype=torch.float32).reshape(-1, 4),
            boxes_o=torch.tensor(e["boxes_o"], dtype=torch.float32).reshape(-1, 4),
            hoi=torch.tensor(e["hoi"], dtype=torch.long),
            scores=torch.tensor(e["scores"], dtype=torch.float32),
            object=torch.zeros(len(e["hoi"]), dtype=torch.long),
            image_logits=torch.zeros(ann.num_classes),
        )
        for name, e in results.items()
    }
    as_json = {name: r.to_json() for name, r in direct.items()}
    assert evaluate_hicodet(ann, direct, setting) == evaluate_hicodet(ann, as_json, setting)


def test_load_annotations_errors(tmp_path):
    good = instances([[(0, [1, 1, 10, 10], FAR)]], [0], rare=[])
    cases = [
        ({k: v for k, v in good.items() if k != "rare"}, r"missing key\(s\) \['rare'\]"),
        ({**good, "correspondence": [[1, 0, 0]]}, "each hoi id"),
        ({**good, "filenames": []}, "must match"),
        ({**good, "annotation": [{**good["annotation"][0], "hoi": [3]}]}, "outside"),
        ({**good, "annotation": [{**good["annotation"][0], "boxes_o": []}]}, "1 human boxes, 0 object boxes"),
        ({**good, "rare": [7]}, "'rare' must be a list of class ids"),
    ]
    path = tmp_path / "instances.json"
    for data, message in cases:
        path.write_text(json.dumps(data))
        with pytest.raises(DatasetError, match=message):
            load_annotations(path)
    with pytest.raises(DatasetError, match="no such annotation file"):
        load_annotations(tmp_path / "missing.json")
    (tmp_path / "anno.txt").write_text("x")
    with pytest.raises(DatasetError, match="expected an instances"):
        load_annotations(tmp_path / "anno.txt")


def struct_array(records: list[dict], column: bool = False) -> np.ndarray:
    """A MATLAB struct array (1 × K, or K × 1) for scipy.io.savemat."""
    names = list(records[0])
    shape = (len(records), 1) if column else (1, len(records))
    array = np.empty(shape, dtype=[(n, object) for n in names])
    for i, record in enumerate(records):
        for n in names:
            array[n].reshape(-1)[i] = record[n]
    return array


def mat_box(box) -> np.ndarray:
    return struct_array([dict(zip(("x1", "y1", "x2", "y2"), map(float, box), strict=True))])


def mat_image(filename: str, hois: list[tuple]) -> dict:
    """hois: (1-based class id, human boxes, object boxes, 1-based connection rows, invis)."""
    return {
        "filename": filename,
        "size": struct_array([{"width": 640.0, "height": 480.0, "depth": 3.0}]),
        "hoi": struct_array(
            [
                {
                    "id": float(c),
                    "bboxhuman": np.concatenate([mat_box(b) for b in humans], axis=1),
                    "bboxobject": np.concatenate([mat_box(b) for b in objects], axis=1),
                    "connection": np.array(connection, dtype=float),
                    "invis": float(invis),
                }
                for c, humans, objects, connection, invis in hois
            ]
        ),
    }


def test_anno_bbox_mat_reader(tmp_path):
    h1, h2, o1 = [1, 1, 10, 10], [31, 1, 40, 10], [21, 21, 30, 30]
    actions = struct_array(
        [
            {"nname": n, "vname": v, "vname_ing": v + "ing"}
            for v, n in [("ride", "bicycle"), ("hold", "bicycle"), ("fly", "kite")]
        ],
        column=True,
    )
    test = struct_array(
        [
            mat_image("a.jpg", [(1, [h1, h2], [o1], [[1, 1], [2, 1]], 0), (3, [h1], [o1], [[1, 1]], 1)]),
            mat_image("b.jpg", [(2, [h2], [o1], [[1, 1]], 0)]),
        ]
    )
    # training instances: class 1 ten times (non-rare), class 2 nine visible + invisible ones (rare), class 3 none
    train = struct_array(
        [
            mat_image(
                "t.jpg",
                [
                    (1, [h1], [o1], [[1, 1]] * 10, 0),
                    (2, [h1], [o1], [[1, 1]] * 9, 0),
                    (2, [h1], [o1], [[1, 1]] * 5, 1),
                ],
            )
        ]
    )
    path = tmp_path / "anno_bbox.mat"
    scipy.io.savemat(path, {"bbox_test": test, "bbox_train": train, "list_action": actions})
    ann = load_annotations(path)
    assert ann.filenames == ["a.jpg", "b.jpg"]
    np.testing.assert_array_equal(ann.sizes, [[640, 480], [640, 480]])
    np.testing.assert_array_equal(ann.boxes_h[0], [h1, h2])
    np.testing.assert_array_equal(ann.boxes_o[0], [o1, o1])
    np.testing.assert_array_equal(ann.hoi[0], [0, 0])  # the invisible class-3 pair is not GT
    np.testing.assert_array_equal(ann.hoi[1], [1])
    np.testing.assert_array_equal(ann.class_objects, [ann.class_objects[0]] * 2 + [ann.class_objects[2]])
    assert ann.class_objects[0] != ann.class_objects[2]
    assert (ann.rare, ann.non_rare) == ([1, 2], [0])

    # the same GT as JSON evaluates identically
    as_json = instances([[(0, h1, o1), (0, h2, o1)], [(1, h2, o1)]], [int(o) for o in ann.class_objects], rare=[1, 2])
    as_json["filenames"] = ["a.jpg", "b.jpg"]
    results = {"a.jpg": {"boxes_h": [zero_based(h2)], "boxes_o": [zero_based(o1)], "hoi": [0], "scores": [0.3]}}
    assert evaluate_hicodet(ann, results) == evaluate_hicodet(write_annotations(tmp_path, as_json), results)

    scipy.io.savemat(path, {"bbox_test": test, "list_action": actions})
    with pytest.raises(DatasetError, match="no 'bbox_train'.*instances_test2015.json"):
        load_annotations(path)
    scipy.io.savemat(path, {"bbox_test": test, "bbox_train": train})
    with pytest.raises(DatasetError, match=r"missing field\(s\) \['list_action'\]"):
        load_annotations(path)
    broken = struct_array([{"filename": "a.jpg", "size": 3.0, "hoi": test[0, 0]["hoi"]}])
    scipy.io.savemat(path, {"bbox_test": broken, "bbox_train": train, "list_action": actions})
    with pytest.raises(DatasetError, match=r"bbox_test\(1\): malformed entry"):
        load_annotations(path)
    path.write_bytes(b"not a mat file")
    with pytest.raises(DatasetError, match="not a readable MATLAB file"):
        load_annotations(path)


# --------------------------------------------------------------------------- CLI


def test_eval_hicodet_command(tmp_path, synth_root):
    annotations = synth_root / "instances_test2015.json"
    ann = load_annotations(annotations)
    results = tmp_path / "results.json"
    results.write_text(json.dumps(gt_as_detections(ann)))
    out = tmp_path / "metrics.json"
    run = CliRunner().invoke(
        main, ["eval-hicodet", "--annotations", str(annotations), "--results", str(results), "--json", str(out)]
    )
    assert run.exit_code == 0, run.output
    assert "full      mAP 100.00" in run.output
    written = json.loads(out.read_text())
    assert written == evaluate_hicodet(ann, gt_as_detections(ann))
    assert {"full", "rare", "non_rare", "setting", "per_class_ap", "num_gt"} <= set(written)

    run = CliRunner().invoke(
        main,
        ["eval-hicodet", "--annotations", str(annotations), "--results", str(results), "--setting", "known-object"],
    )
    assert run.exit_code == 0 and "known-object" in run.output

    results.write_text(json.dumps({"missing.jpg": {"boxes_h": [], "boxes_o": [], "hoi": [], "scores": []}}))
    run = CliRunner().invoke(main, ["eval-hicodet", "--annotations", str(annotations), "--results", str(results)])
    assert run.exit_code == 1 and "missing.jpg" in run.output


def test_results_the_official_format_does_not_allow_are_refused(tmp_path):
    """Numbers as strings or booleans, scores outside [0, 1], inverted boxes, a file without detections."""
    h, o = [1, 1, 10, 10], [21, 21, 30, 30]
    ann = write_annotations(tmp_path, instances([[(0, h, o)]], [0, 0], rare=[]))
    good = {"boxes_h": [[0, 0, 9, 9]], "boxes_o": [[20, 20, 29, 29]], "hoi": [1], "scores": [0.5]}
    cases = [
        ({**good, "scores": ["0.5"]}, r"img0.jpg: scores is not a numeric array: '0.5' \(str\)"),
        ({**good, "scores": [True]}, r"img0.jpg: scores is not a numeric array: True \(bool\)"),
        ({**good, "hoi": ["1"]}, r"img0.jpg: hoi is not a numeric array: '1'"),
        ({**good, "boxes_o": [[20, "20", 29, 29]]}, "img0.jpg: boxes_o is not a numeric array"),
        ({**good, "scores": [1.5]}, r"img0.jpg: scores must be in \[0, 1\], got \[1.5\]"),
        ({**good, "scores": [-0.1]}, r"scores must be in \[0, 1\]"),
        ({**good, "boxes_h": [[9, 0, 0, 9]]}, r"img0.jpg: boxes_h\[0\] = \[9.0, 0.0, 0.0, 9.0\] is inverted"),
        ({**good, "boxes_o": [[20, 29, 29, 20]]}, r"boxes_o\[0\] .* is inverted"),
    ]
    path = tmp_path / "results.json"
    for entry, message in cases:
        path.write_text(json.dumps({"img0.jpg": entry}))
        with pytest.raises(ResultsError, match=message):
            load_results(path, ann)
    for empty in ({}, {"img0.jpg": {"boxes_h": [], "boxes_o": [], "hoi": [], "scores": []}}):
        path.write_text(json.dumps(empty))
        with pytest.raises(ResultsError, match="no detections at all.*--allow-empty"):
            load_results(path, ann)
        assert load_results(path, ann, allow_empty=True) == empty
    r = CliRunner().invoke(main, ["eval-hicodet", "--annotations", str(tmp_path / "instances_test2015.json"),
                                  "--results", str(path)])  # fmt: skip
    assert r.exit_code == 1 and "--allow-empty" in r.output
    r = CliRunner().invoke(main, ["eval-hicodet", "--annotations", str(tmp_path / "instances_test2015.json"),
                                  "--results", str(path), "--allow-empty"])  # fmt: skip
    assert r.exit_code == 0 and "0.00" in r.output


# --- hostile annotations and results (issue 28, item 6) ----------------------------------------------------------


def _eval_cli(tmp_path, annotations_text: str, results: dict | str):
    (tmp_path / "instances_test2015.json").write_text(annotations_text)
    (tmp_path / "r.json").write_text(results if isinstance(results, str) else json.dumps(results))
    args = ["eval-hicodet", "--annotations", str(tmp_path / "instances_test2015.json"), "--results"]
    return CliRunner().invoke(main, [*args, str(tmp_path / "r.json")])


_GOOD = instances([[(0, [1, 1, 10, 10], [20, 20, 30, 30])], [(0, [1, 1, 10, 10], [20, 20, 30, 30])]], [0], rare=[])
_DETS = detections((0, 0, [0, 0, 9, 9], [19, 19, 29, 29], 0.9))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('"size"', '"big": ' + "9" * 5000 + ', "size"'), "does not fit in 64 bits"),
        (lambda t: t.replace("20.0, 20.0, 30.0", "20.0, 20.0, 3" + "0" * 400), "instances_test2015.json"),
        (lambda t: t.replace('"size"', '"deep": ' + "[" * 100_000 + "]" * 100_000 + ', "size"'), "nested too deeply"),
        (lambda t: t.replace("[20.0, 20.0, 30.0, 30.0]", "[30.0, 20.0, 20.0, 30.0]", 1), "is inverted"),
        (lambda t: t.replace('"img1.jpg"', '"img0.jpg"'), "file name 'img0.jpg' appears twice"),
        (lambda t: t.replace('"img1.jpg"', "7"), "file names must be non-empty strings, got 7"),
    ],
)
def test_hostile_annotations_are_refused_naming_the_annotations_file(tmp_path, edit, message):
    r = _eval_cli(tmp_path, edit(json.dumps(_GOOD)), _DETS)
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "instances_test2015.json" in r.output and message in r.output and "r.json" not in r.output, r.output


def test_results_with_one_image_twice_are_refused(tmp_path):
    entry = json.dumps(_DETS["img0.jpg"])
    r = _eval_cli(tmp_path, json.dumps(_GOOD), f'{{"img0.jpg": {entry}, "img0.jpg": {entry}}}')
    assert r.exit_code == 1 and "r.json" in r.output and "key 'img0.jpg' appears twice" in r.output, r.output
