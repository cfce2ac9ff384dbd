"""Detector adapters against real detector classes (random weights) and stand-ins of their result types."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from videokit import frames

from defr import vocab
from defr.detections import DetectionError, Detections
from defr.errors import ConfigError
from defr.runtime.io import InputFileError
from defr.video import (
    PrecomputedDetector,
    SupervisionDetector,
    UltralyticsDetector,
    build_torchvision_detector,
    detections_from_supervision,
    make_detector,
)
from defr.video.errors import VideoError

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
        assert isinstance(dets, Detections) and len(dets) > 0
        assert dets.labels.min() >= 0 and dets.labels.max() < vocab.NUM_OBJECTS
        assert (dets.boxes[:, 2] <= 96).all() and (dets.boxes[:, 3] <= 72).all()  # original pixels
    (tmp_path / "bad.pth").write_bytes(b"not weights")
    with pytest.raises(VideoError, match="not weights of torchvision:"):
        build_torchvision_detector(name, tmp_path / "bad.pth")


def test_torchvision_without_cached_weights_says_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(VideoError) as e:
        make_detector("torchvision:fasterrcnn_resnet50_fpn")
    message = str(e.value)
    assert "--detector-weights PATH" in message and "fasterrcnn_resnet50_fpn_coco" in message and "\n" not in message
    with pytest.raises(ConfigError, match="unknown torchvision detection model"):
        make_detector("torchvision:resnet50")


class StandInTorchvision(torch.nn.Module):
    """Called like a torchvision detection model: a list of [3, H, W] tensors → one dict each (COCO ids)."""

    def __init__(self, labels):
        super().__init__()
        self.labels = labels

    def forward(self, images):
        n = len(self.labels)
        boxes = torch.tensor([[0.0, 0.0, 5.0, 5.0]] * n)
        return [{"boxes": boxes, "labels": torch.tensor(self.labels), "scores": torch.full((n,), 0.9)} for _ in images]


def test_torchvision_coco91_ids_map_to_hico_and_na_slots_are_refused():
    from defr.video import TorchvisionDetector

    out = TorchvisionDetector(StandInTorchvision([1, 2]))(frames(1), [4])
    assert out[0].labels.tolist() == [vocab.PERSON, BICYCLE]
    with pytest.raises(DetectionError, match=r"frame 4: label 12 at detection 1 is not a coco91 object label"):
        TorchvisionDetector(StandInTorchvision([1, 12]))(frames(1), [4])  # 12: an "N/A" slot


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
    with pytest.raises(VideoError, match="without class_id"):
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
    with pytest.raises(VideoError, match=r"no detections for frame 7 \(the file covers frames 0..2\)"):
        PrecomputedDetector.from_file(jsonl)([None], [7])
    coco = PrecomputedDetector.from_file(jsonl, "coco80")  # 49 in COCO-80 is an orange
    assert coco([None], [0])[0].labels.tolist() == [HICO.objects.index("orange")]


def test_precomputed_bad_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"frame": 0, "boxes": [], "labels": [], "scores": []}\n{"frame": 0, "boxes": [], "labels": [], "scores": []}\n'
    )
    with pytest.raises(InputFileError, match=r"line 2: second entry for frame 0 \(first at line 1\)"):
        PrecomputedDetector.from_file(bad)
    bad.write_text('{"frame": 0, "boxes": []}\n')
    with pytest.raises(InputFileError, match=r"line 1 \(frame 0\): detections lack \['labels', 'scores'\]"):
        PrecomputedDetector.from_file(bad)
    bad.write_text("{not json")
    with pytest.raises(InputFileError, match="not valid JSON"):
        PrecomputedDetector.from_file(bad)
    with pytest.raises(InputFileError, match="cannot read"):
        PrecomputedDetector.from_file(tmp_path / "missing.jsonl")


def test_detector_specs():
    for spec in ("yolo:x.pt", "torchvision", "detections:", "file.jsonl"):
        with pytest.raises(ConfigError, match="torchvision:NAME, ultralytics:WEIGHTS, detections:FILE"):
            make_detector(spec)
    with pytest.raises(ConfigError, match="applies to torchvision"):
        make_detector("detections:x.jsonl", weights="w.pth")


def test_adapter_outputs_are_checked_by_the_one_contract():
    """Adapters build ``Detections``: NaN, inverted boxes, scores outside [0, 1], labels off the space are refused."""

    class Stand:  # what the adapter reads of supervision.Detections (which itself refuses NaN)
        def __init__(self, xyxy, class_id, confidence):
            self.xyxy, self.class_id, self.confidence = np.array(xyxy, float), np.array(class_id), np.array(confidence)

        def __len__(self):
            return len(self.xyxy)

    one = Stand

    assert len(detections_from_supervision(one([[0, 0, 5, 5]], [0], [0.5]), "coco80", "frame 2")) == 1
    for dets, match in [
        (one([[np.nan, 0, 5, 5]], [0], [0.5]), "frame 2: boxes has NaN"),
        (one([[5, 0, 1, 5]], [0], [0.5]), "frame 2: inverted"),
        (one([[0, 0, 5, 5]], [0], [1.5]), r"frame 2: scores must be in \[0, 1\]"),
        (one([[0, 0, 5, 5]], [80], [0.5]), "frame 2: label 80 at detection 0 is not a coco80 object label"),
    ]:
        with pytest.raises(DetectionError, match=match):
            detections_from_supervision(dets, "coco80", "frame 2")


# --- issue 18 case 5: detections:FILE refuses what `defr detect` refuses ------------------------------------------


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ({"frame": 0, "boxes": [[0, 0, 5, 5]], "labels": [49.9], "scores": [0.5]}, "labels must be whole numbers"),
        ({"frame": 0, "boxes": [[0, 0, 5, 5]], "labels": [49], "scores": [True]}, r"True \(bool\) is not a number"),
        ({"frame": "0", "boxes": [[0, 0, 5, 5]], "labels": [49], "scores": [0.5]}, "'frame' must be a whole number"),
        ({"frame": 3.7, "boxes": [[0, 0, 5, 5]], "labels": [49], "scores": [0.5]}, "'frame' must be a whole number"),
        ({"frame": True, "boxes": [], "labels": [], "scores": []}, "'frame' must be a whole number"),
        ({"frame": 0, "boxes": "[[0, 0, 5, 5]]", "labels": [49], "scores": [0.5]}, "boxes must be a list"),
        ({"frame": 0, "boxes": [[0, 0, 5, 5]], "labels": "49", "scores": [0.5]}, "labels must be a list"),
        ({"frame": 0, "boxes": [[0, 0, 5, 5]], "labels": ["49"], "scores": [0.5]}, r"'49' \(str\) is not a number"),
        ({"frame": 0, "boxes": [[0, 0, 5, 5]], "labels": [49], "scores": ["0.5"]}, r"'0.5' \(str\) is not a number"),
        ({"frame": 0, "boxes": [[0, "0", 5, 5]], "labels": [49], "scores": [0.5]}, "boxes is not a numeric array"),
        ({"frame": 0, "boxes": [[5, 0, 1, 5]], "labels": [49], "scores": [0.5]}, "inverted"),
    ],
)
def test_precomputed_detections_refuse_what_detect_refuses(tmp_path, line, match):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(InputFileError, match=match):
        make_detector(f"detections:{path}")
    as_list = tmp_path / "d.json"
    as_list.write_text(json.dumps([line]))
    with pytest.raises(InputFileError, match=match):
        PrecomputedDetector.from_file(as_list)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"frame": 1e400, "boxes": [], "labels": [], "scores": []}', "1e400 is out of range"),
        ('{"frame": 0, "boxes": [], "labels": [' + "9" * 400 + '], "scores": []}', "does not fit in 64 bits"),
        ('{"frame": 0, "boxes": [], "labels": [' + "9" * 5000 + '], "scores": []}', "does not fit in 64 bits"),
        (
            '{"frame": 0, "boxes": ' + "[" * 100_000 + "]" * 100_000 + ', "labels": [], "scores": []}',
            "nested too deeply",
        ),
    ],
)
def test_hostile_json_in_video_detections_is_refused_by_name(tmp_path, text, match):
    """Issue 18 case 14: huge integers, 1e400 frames and deep nesting are refused naming the file and line."""
    path = tmp_path / "d.jsonl"
    path.write_text(text + "\n")
    with pytest.raises(InputFileError, match=f"d.jsonl, line 1: .*{match}"):
        PrecomputedDetector.from_file(path)


def test_defr_video_refuses_a_bad_detections_file_in_one_line(tmp_path):
    """Case 5 through the command: the refusal is one line naming the file and line, exit 1."""
    from click.testing import CliRunner

    from defr.cli import main

    dets = tmp_path / "d.jsonl"
    dets.write_text(json.dumps({"frame": 0, "boxes": [[0, 0, 5, 5]], "labels": [49.9], "scores": [0.5]}) + "\n")
    model = tmp_path / "model.onnx"
    model.write_bytes(b"never read: the detections are refused first")
    args = ["video", str(tmp_path / "in.mp4"), "--model", str(model), "--detector", f"detections:{dets}"]
    r = CliRunner().invoke(main, [*args, "--frames", str(tmp_path / "f.jsonl")])
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert "d.jsonl, line 1 (frame 0): labels must be whole numbers, got 49.9" in r.output
