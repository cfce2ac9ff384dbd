"""Detector adapters against real detector classes (random weights) and stand-ins of their result types."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from videokit import frames

from defr import vocab
from defr.errors import ConfigError
from defr.video import (
    DetectorError,
    PrecomputedDetector,
    SupervisionDetector,
    UltralyticsDetector,
    build_torchvision_detector,
    check_detections,
    detections_from_supervision,
    make_detector,
)
from defr.video.records import FrameDetections

HICO = vocab.hico()
BICYCLE, BALL = HICO.objects.index("bicycle"), HICO.objects.index("sports_ball")


@pytest.mark.slow
def test_torchvision_detector_from_a_weights_file(tmp_path):
    """A real torchvision detector (random weights, saved and loaded as --detector-weights would be)."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    torch.manual_seed(0)
    weights = tmp_path / "detector.pth"
    torch.save(fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None).state_dict(), weights)
    detector = build_torchvision_detector(name, weights, box_score_thresh=0.0, box_detections_per_img=20)
    clip = frames(2, (96, 72))
    out = detector(clip, [0, 1])
    assert len(out) == 2
    for dets in out:
        assert isinstance(dets, FrameDetections) and len(dets) > 0
        assert check_detections(dets) is None
        assert dets.labels.min() >= 0 and dets.labels.max() < vocab.NUM_OBJECTS
        assert (dets.boxes[:, 2] <= 96).all() and (dets.boxes[:, 3] <= 72).all()  # original pixels
    (tmp_path / "bad.pth").write_bytes(b"not weights")
    with pytest.raises(DetectorError, match="not weights of torchvision:"):
        build_torchvision_detector(name, tmp_path / "bad.pth")


def test_torchvision_without_cached_weights_says_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(DetectorError) as e:
        make_detector("torchvision:fasterrcnn_resnet50_fpn")
    message = str(e.value)
    assert "--detector-weights PATH" in message and "fasterrcnn_resnet50_fpn_coco" in message and "\n" not in message
    with pytest.raises(ConfigError, match="unknown torchvision detection model"):
        make_detector("torchvision:resnet50")


def test_torchvision_coco91_ids_map_to_hico_and_na_slots_are_dropped():
    from defr.video.detectors import to_hico

    d = to_hico([[0, 0, 5, 5], [1, 1, 4, 4], [2, 2, 3, 3]], [1, 12, 2], [0.9, 0.8, 0.7], "coco91")  # 12: "N/A"
    assert d.labels.tolist() == [vocab.PERSON, BICYCLE] and d.scores.tolist() == pytest.approx([0.9, 0.7])


class Boxes:
    """What ultralytics' ``Results.boxes`` offers the adapter: xyxy, cls, conf tensors."""

    def __init__(self, xyxy, cls, conf):
        self.xyxy, self.cls, self.conf = torch.tensor(xyxy), torch.tensor(cls), torch.tensor(conf)


class Results:
    def __init__(self, boxes: Boxes):
        self.boxes = boxes


class StandInYOLO:
    """Called like ``ultralytics.YOLO``: a list of BGR arrays → one Results each (COCO-80 classes)."""

    def __init__(self):
        self.seen = []

    def __call__(self, images, verbose=True):
        self.seen.append((images, verbose))
        return [Results(Boxes([[1.0, 2.0, 30.0, 40.0], [5.0, 5.0, 9.0, 9.0]], [0.0, 32.0], [0.8, 0.6])) for _ in images]


def test_ultralytics_results_are_read_through_boxes_xyxy_cls_conf():
    model = StandInYOLO()
    clip = frames(2)
    out = UltralyticsDetector(model)(clip, [0, 1])
    assert [d.labels.tolist() for d in out] == [[vocab.PERSON, BALL]] * 2  # COCO-80: 0 person, 32 sports ball
    assert out[0].boxes.tolist() == [[1, 2, 30, 40], [5, 5, 9, 9]] and out[0].scores.tolist() == pytest.approx(
        [0.8, 0.6]
    )
    images, verbose = model.seen[0]
    assert verbose is False and np.array_equal(images[0], clip[0][..., ::-1])  # BGR, as ultralytics expects


def test_supervision_detections():
    import supervision as sv

    d = sv.Detections(xyxy=np.array([[0, 0, 10, 10.0]]), class_id=np.array([1]), confidence=None)
    out = detections_from_supervision(d, "coco80")  # COCO-80 1: bicycle
    assert out.labels.tolist() == [BICYCLE] and out.scores.tolist() == [1.0]
    calls = []
    detector = SupervisionDetector(lambda f: calls.append(f.shape) or d, "coco80")
    assert len(detector(frames(3), [0, 1, 2])) == 3 and calls == [(72, 96, 3)] * 3
    with pytest.raises(DetectorError, match="without class_id"):
        detections_from_supervision(sv.Detections(xyxy=np.zeros((1, 4))))


def test_precomputed_jsonl_and_json(tmp_path):
    lines = [{"frame": i, "boxes": [[0, 0, 5, 5]], "labels": [49], "scores": [0.9]} for i in range(3)]
    lines[1] = {"frame": 1, "boxes": [], "labels": [], "scores": []}
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps(x) + "\n" for x in lines))
    by_index = tmp_path / "d.json"
    by_index.write_text(json.dumps({str(x["frame"]): {k: v for k, v in x.items() if k != "frame"} for x in lines}))
    as_list = tmp_path / "l.json"
    as_list.write_text(json.dumps(lines))
    for path in (jsonl, by_index, as_list):
        det = make_detector(f"detections:{path}")
        out = det([None, None], [2, 1])
        assert [len(d) for d in out] == [1, 0] and out[0].labels.tolist() == [49]
    with pytest.raises(DetectorError, match=r"no detections for frame 7 \(the file covers frames 0..2\)"):
        PrecomputedDetector(jsonl)([None], [7])
    coco = PrecomputedDetector(jsonl, "coco80")  # 49 in COCO-80 is an orange
    assert coco([None], [0])[0].labels.tolist() == [HICO.objects.index("orange")]


def test_precomputed_bad_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"frame": 0, "boxes": [], "labels": [], "scores": []}\n{"frame": 0, "boxes": [], "labels": [], "scores": []}\n'
    )
    with pytest.raises(DetectorError, match="line 2: frame 0 appears twice"):
        PrecomputedDetector(bad)
    bad.write_text('{"frame": 0, "boxes": []}\n')
    with pytest.raises(DetectorError, match="needs 'frame', 'boxes', 'labels' and 'scores'"):
        PrecomputedDetector(bad)
    bad.write_text("{not json")
    with pytest.raises(DetectorError, match="not a detections file"):
        PrecomputedDetector(bad)
    with pytest.raises(DetectorError, match="cannot read detections"):
        PrecomputedDetector(tmp_path / "missing.jsonl")


def test_detector_specs():
    for spec in ("yolo:x.pt", "torchvision", "detections:", "file.jsonl"):
        with pytest.raises(ConfigError, match="torchvision:NAME, ultralytics:WEIGHTS, detections:FILE"):
            make_detector(spec)
    with pytest.raises(ConfigError, match="applies to torchvision"):
        make_detector("detections:x.jsonl", weights="w.pth")


def test_the_output_contract():
    ok = FrameDetections([[0, 0, 5, 5]], [49], [0.5])
    assert check_detections(ok) is None
    assert "NaN" in check_detections(FrameDetections([[np.nan, 0, 5, 5]], [49], [0.5]))
    assert "inverted" in check_detections(FrameDetections([[5, 0, 1, 5]], [49], [0.5]))
    assert "scores outside" in check_detections(FrameDetections([[0, 0, 5, 5]], [49], [1.5]))
    assert "labels outside" in check_detections(FrameDetections([[0, 0, 5, 5]], [80], [0.5]))
