"""Pairing rules and priors of the runtime (``defr.runtime.pairing``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from defr import vocab
from defr.detections import DetectionError, Detections
from defr.runtime.pairing import PairConfig, make_pairs, pair_priors

PERSON = vocab.PERSON
BICYCLE = vocab.hico().objects.index("bicycle")
CUP = vocab.hico().objects.index("cup")


def _pairs(boxes, labels, scores, cfg: PairConfig | None = None, name: str = "image"):
    return make_pairs(Detections(boxes, labels, scores, name=name), cfg)


def _grid_boxes(n: int, step: float = 100.0) -> list[list[float]]:
    """n disjoint 50×50 boxes."""
    return [[i * step, 0.0, i * step + 50, 50.0] for i in range(n)]


def test_pairs_each_human_with_every_other_box_including_humans():
    boxes = _grid_boxes(3)
    p = _pairs(boxes, [PERSON, PERSON, BICYCLE], [0.9, 0.8, 0.7])
    assert len(p) == 4  # 2 humans × (3 boxes − 1)
    got = sorted(zip(p.human.tolist(), p.object.tolist(), strict=True))
    assert got == [(0, 1), (0, 2), (1, 0), (1, 2)]
    assert p.kept.tolist() == [0, 1, 2]
    # Boxes, labels and scores follow the indices.
    for k in range(len(p)):
        h, o = p.kept[p.human[k]], p.kept[p.object[k]]
        assert p.boxes_h[k].tolist() == boxes[h] and p.boxes_o[k].tolist() == boxes[o]
        assert p.object_label[k] == [PERSON, PERSON, BICYCLE][o]
        assert p.score_h[k] == pytest.approx([0.9, 0.8, 0.7][h]) and p.score_o[k] == pytest.approx([0.9, 0.8, 0.7][o])


def test_score_threshold_is_inclusive_and_configurable():
    boxes = _grid_boxes(4)
    labels = [PERSON, BICYCLE, CUP, CUP]
    p = _pairs(boxes, labels, [0.9, 0.2, 0.19999, 0.5])
    assert sorted(p.kept.tolist()) == [0, 1, 3]  # 0.2 kept, just below dropped
    p = _pairs(boxes, labels, [0.9, 0.2, 0.19999, 0.5], PairConfig(score_threshold=0.6))
    assert p.kept.tolist() == [0] and len(p) == 0  # a lone human has no partner


def test_classwise_nms():
    boxes = [[0, 0, 100, 100], [5, 5, 100, 100], [0, 0, 100, 100], [300, 300, 350, 350]]
    labels = [CUP, CUP, BICYCLE, PERSON]
    p = _pairs(boxes, labels, [0.6, 0.9, 0.5, 0.95])
    kept = p.kept.tolist()
    assert 0 not in kept and {1, 2, 3} == set(kept)  # same-class overlap suppressed, other class kept
    p = _pairs(boxes, labels, [0.6, 0.9, 0.5, 0.95], PairConfig(nms_threshold=1.0))
    assert set(p.kept.tolist()) == {0, 1, 2, 3}


def test_at_most_15_humans_and_15_objects_by_score():
    n = 20
    boxes = _grid_boxes(2 * n)
    labels = [PERSON] * n + [CUP] * n
    scores = np.linspace(0.3, 0.99, 2 * n)[np.random.default_rng(0).permutation(2 * n)]
    p = _pairs(boxes, labels, scores)
    humans = p.kept[:15]
    assert len(p.kept) == 30 and len(p) == 15 * 29
    assert set(humans.tolist()) == set(np.argsort(-scores[:n])[:15].tolist())
    assert set(p.kept[15:].tolist()) == set((n + np.argsort(-scores[n:])[:15]).tolist())
    # Sorted by score inside each group.
    assert (np.diff(scores[humans.numpy()]) <= 0).all()
    small = _pairs(boxes, labels, scores, PairConfig(max_humans=2, max_objects=3))
    assert len(small.kept) == 5 and len(small) == 2 * 4


@pytest.mark.parametrize(
    "boxes,labels,scores",
    [([], [], []), (np.zeros((0, 4)), np.zeros(0), np.zeros(0)), (_grid_boxes(2), [CUP, BICYCLE], [0.9, 0.9])],
    ids=["empty-lists", "empty-arrays", "no-human"],
)
def test_no_detections_or_no_human_gives_zero_pairs(boxes, labels, scores):
    p = _pairs(boxes, labels, scores)
    assert len(p) == 0
    assert p.boxes_h.shape == (0, 4) and p.boxes_o.shape == (0, 4) and p.object_label.shape == (0,)
    assert pair_priors(p, torch.tensor(vocab.hico().hoi_object)).shape == (0, 600)


def test_inputs_as_lists_arrays_tensors_agree():
    boxes = _grid_boxes(3)
    labels, scores = [PERSON, CUP, PERSON], [0.5, 0.7, 0.9]
    a = _pairs(boxes, labels, scores)
    b = _pairs(np.array(boxes), np.array(labels), np.array(scores))
    c = _pairs(torch.tensor(boxes), torch.tensor(labels), torch.tensor(scores))
    for x in (b, c):
        assert torch.equal(a.boxes_h, x.boxes_h) and torch.equal(a.object_label, x.object_label)


@pytest.mark.parametrize(
    "boxes,labels,scores,match",
    [
        ([[0, 0, float("nan"), 5]], [PERSON], [0.9], "boxes has NaN or inf"),
        ([[0, 0, float("inf"), 5]], [PERSON], [0.9], "boxes has NaN or inf"),
        ([[10, 0, 5, 5]], [PERSON], [0.9], "inverted"),
        ([[0, 10, 5, 5]], [PERSON], [0.9], "inverted"),
        ([[0, 0, 5, 5]], [80], [0.9], "labels must be HICO objects"),
        ([[0, 0, 5, 5]], [-1], [0.9], "labels must be HICO objects"),
        ([[0, 0, 5, 5]], [1.5], [0.9], "labels must be whole numbers"),
        ([[0, 0, 5, 5]], [PERSON], [float("nan")], "scores has NaN"),
        ([[0, 0, 5, 5]], [PERSON], [1.5], r"scores must be in \[0, 1\]"),
        ([[0, 0, 5, 5]], [PERSON, CUP], [0.9], "1 boxes but labels of shape"),
        ([[0, 0, 5]], [PERSON], [0.9], r"boxes must have shape \[N, 4\]"),
        ([[0, 0, 5, 5]], ["person"], [0.9], "labels is not a numeric array"),
    ],
)
def test_bad_detections_raise_naming_the_image(boxes, labels, scores, match):
    with pytest.raises(DetectionError, match=match) as err:
        _pairs(boxes, labels, scores, name="HICO_test2015_00000001.jpg")
    assert "HICO_test2015_00000001.jpg" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_zero_size_boxes_are_valid():
    p = _pairs([[5, 5, 5, 5], [1, 1, 9, 9]], [PERSON, CUP], [0.9, 0.9])
    assert len(p) == 1


def test_pair_priors_match_the_rule():
    boxes = _grid_boxes(3)
    p = _pairs(boxes, [PERSON, CUP, BICYCLE], [0.8, 0.5, 0.9])
    class_objects = torch.tensor(vocab.hico().hoi_object)
    priors = pair_priors(p, class_objects, exponent=2.8)
    assert priors.shape == (2, 600)
    for k in range(len(p)):
        obj = int(p.object_label[k])
        expected = math.pow(float(p.score_h[k]), 2.8) * math.pow(float(p.score_o[k]), 2.8)
        nonzero = priors[k].nonzero().flatten().tolist()
        assert nonzero == vocab.hico().classes_of_object(obj)
        assert priors[k, nonzero] == pytest.approx([expected] * len(nonzero), rel=1e-5)
    assert pair_priors(p, class_objects, exponent=1.0)[0].max() == pytest.approx(0.8 * float(p.score_o[0]))


def test_person_person_pairs_get_person_object_priors():
    p = _pairs(_grid_boxes(2), [PERSON, PERSON], [0.9, 0.6])
    priors = pair_priors(p, torch.tensor(vocab.hico().hoi_object))
    person_classes = vocab.hico().classes_of_object(PERSON)
    assert len(person_classes) > 0
    assert set(priors[0].nonzero().flatten().tolist()) == set(person_classes)


def test_pair_config_validation():
    with pytest.raises(ValueError, match="max_humans"):
        PairConfig(max_humans=-1)
    with pytest.raises(ValueError, match="nms_threshold"):
        PairConfig(nms_threshold=1.5)
