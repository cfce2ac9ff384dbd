"""``defr.detections.Detections`` (the one contract), label spaces, the one detections-file reader (``runtime.io``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from defr import vocab
from defr.detections import (
    BOUNDS_TOLERANCE,
    DEFAULT_LABEL_SPACE,
    LABEL_SPACES,
    DetectionError,
    Detections,
    as_detections,
    to_hico_labels,
)
from defr.errors import ConfigError
from defr.runtime.io import InputFileError, load_detections, load_frame_detections

PERSON = vocab.PERSON
BICYCLE = vocab.hico().objects.index("bicycle")
BOXES = [[0.0, 0.0, 5.0, 5.0], [1.0, 2.0, 3.0, 4.0]]


def test_lists_numpy_and_torch_give_the_same_record():
    made = [
        Detections(BOXES, [PERSON, BICYCLE], [0.9, 0.5]),
        Detections(np.array(BOXES), np.array([PERSON, BICYCLE]), np.array([0.9, 0.5])),
        Detections(torch.tensor(BOXES), torch.tensor([PERSON, BICYCLE]), torch.tensor([0.9, 0.5])),
        Detections(BOXES, [float(PERSON), float(BICYCLE)], [0.9, 0.5]),  # whole floats are labels
        Detections(BOXES, [np.int64(PERSON), np.int32(BICYCLE)], [np.float32(0.9), 0.5]),  # numpy scalars in lists
    ]
    for d in made:
        assert d.boxes.dtype == np.float32 and d.labels.dtype == np.int64 and d.scores.dtype == np.float32
        assert d.to_dict() == made[0].to_dict()
    assert len(made[0]) == 2 and made[0].track_ids is None


def test_empty_detections():
    for d in (Detections([], [], []), Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0)), Detections.empty()):
        assert len(d) == 0 and d.boxes.shape == (0, 4) and d.labels.shape == (0,)


@pytest.mark.parametrize(
    ("boxes", "labels", "scores", "match"),
    [
        # issue 18 case 22: numpy bool labels and numpy string scores are refused like lists
        (BOXES[:1], np.array([True]), [0.9], "labels must be real numbers, got a numpy bool array"),
        (BOXES[:1], [PERSON], np.array(["0.9"]), "scores must be real numbers, got a numpy <U3 array"),
        (BOXES[:1], torch.tensor([True]), [0.9], "labels must be real numbers, got a torch.bool tensor"),
        (BOXES[:1], [True], [0.9], r"labels is not a numeric array: True \(bool\)"),
        (BOXES[:1], [PERSON], [True], r"scores is not a numeric array: True \(bool\)"),
        (BOXES[:1], [PERSON], [np.bool_(True)], r"scores is not a numeric array"),
        (BOXES[:1], ["22"], [0.9], r"labels is not a numeric array: '22' \(str\)"),
        (BOXES[:1], [49.9], [0.9], "labels must be whole numbers, got 49.9 at detection 0"),
        (BOXES[:1], np.array([49.9]), [0.9], "labels must be whole numbers, got 49.9"),
        (BOXES[:1], torch.tensor([49.9]), [0.9], "labels must be whole numbers, got 49.9"),
        (BOXES[:1], [80], [0.9], "labels must be HICO objects, integers in 0..79"),
        (BOXES[:1], [-1], [0.9], "labels must be HICO objects"),
        (BOXES[:1], [PERSON], [1.5], r"scores must be in \[0, 1\], got \[1.5\] at detection\(s\) \[0\]"),
        (BOXES[:1], [PERSON], [-0.1], r"scores must be in \[0, 1\]"),
        ([[0, 0, np.nan, 5]], [PERSON], [0.9], r"boxes has NaN or inf"),
        ([[0, 0, 1e39, 5]], [PERSON], [0.9], r"boxes has NaN or inf \(or a value beyond float32\)"),
        (BOXES[:1], [PERSON], [np.inf], "scores has NaN or inf"),
        ([[5, 0, 1, 5]], [PERSON], [0.9], r"inverted box\(es\)"),
        ([[0, 0, 5]], [PERSON], [0.9], r"boxes must have shape \[N, 4\]"),
        (BOXES, [PERSON], [0.9, 0.8], r"2 boxes but labels of shape \[1\]"),
        ([[0, 0, 5, "5"]], [PERSON], [0.9], "boxes is not a numeric array"),
        ([[0, 0, 5, 5], [0, 0, 5]], [PERSON, PERSON], [0.9, 0.9], "boxes is not a rectangular array"),
        ("[[0, 0, 5, 5]]", [PERSON], [0.9], "boxes must be a list, array or tensor of numbers, not str"),
        (BOXES[:1], [10**400], [0.9], "labels is not a rectangular array of numbers"),
    ],
)
def test_bad_detections_are_refused_naming_image_and_field(boxes, labels, scores, match):
    with pytest.raises(DetectionError, match=match) as err:
        Detections(boxes, labels, scores, name="HICO_test2015_00000001.jpg")
    assert str(err.value).startswith("HICO_test2015_00000001.jpg: ") and isinstance(err.value, ValueError)


def test_a_record_stays_valid_its_arrays_are_read_only():
    d = Detections(BOXES, [PERSON, BICYCLE], [0.9, 0.5])
    with pytest.raises(ValueError, match="read-only"):
        d.boxes[0, 0] = np.nan
    with pytest.raises(AttributeError):
        d.boxes = np.zeros((1, 4))
    boxes, labels, scores = d.tensors()  # copies: the runtime may write to them
    boxes[0, 0] = -1
    assert d.boxes[0, 0] == 0 and labels.dtype == torch.long and scores.dtype == torch.float32


def test_select_track_ids_and_dict_round_trip():
    d = Detections(BOXES, [PERSON, BICYCLE], [0.9, 0.5], name="frame 3")
    tracked = d.with_track_ids([7, -1])
    assert tracked.track_ids.tolist() == [7, -1] and d.track_ids is None
    one = tracked.select(np.array([False, True]))
    assert one.labels.tolist() == [BICYCLE] and one.track_ids.tolist() == [-1] and one.name == "frame 3"
    assert tracked.select([1, 0]).labels.tolist() == [BICYCLE, PERSON]
    again = Detections.from_dict(tracked.to_dict())
    assert (
        again.to_dict()
        == tracked.to_dict()
        == {
            "boxes": BOXES,
            "labels": [PERSON, BICYCLE],
            "scores": [pytest.approx(0.9), 0.5],
            "track_ids": [7, -1],
        }
    )
    with pytest.raises(DetectionError, match="frame 3: track_ids must be >= -1"):
        d.with_track_ids([0, -2])
    with pytest.raises(DetectionError, match="frame 3: track_ids must be whole numbers"):
        d.with_track_ids([0.5, 1])
    assert as_detections(d) is d
    with pytest.raises(DetectionError, match=r"f: detections lack \['scores'\]"):
        as_detections({"boxes": [], "labels": []}, name="f")
    with pytest.raises(DetectionError, match="f: detections must be a dict"):
        as_detections([[0, 0, 1, 1]], name="f")


# --- label spaces: one conversion, one policy --------------------------------------------------------------------


def test_label_spaces_live_in_one_place():
    assert LABEL_SPACES == ("hico", "coco80", "coco91") and DEFAULT_LABEL_SPACE == "hico"
    with pytest.raises(ConfigError, match="label space must be one of hico, coco80, coco91, not 'voc'"):
        to_hico_labels([0], "voc")


def test_coco_labels_map_to_hico():
    assert to_hico_labels([0, 1], "coco80").tolist() == [PERSON, BICYCLE]
    assert to_hico_labels(np.array([1, 2]), "coco91").tolist() == [PERSON, BICYCLE]
    assert to_hico_labels(torch.tensor([0.0, 1.0]), "coco80").tolist() == [PERSON, BICYCLE]  # YOLO's float classes
    assert to_hico_labels([], "coco80").shape == (0,)
    assert sorted(to_hico_labels(np.arange(80), "coco80").tolist()) == list(range(80))  # a bijection
    assert to_hico_labels([3, 4], "hico").tolist() == [3, 4]
    d = Detections.from_label_space(BOXES, [1, 2], [0.9, 0.5], "coco91")
    assert d.labels.tolist() == [PERSON, BICYCLE]
    assert Detections.from_dict({"boxes": BOXES, "labels": [0, 1], "scores": [1, 1]}, "coco80").labels[0] == PERSON


@pytest.mark.parametrize(
    ("labels", "space", "match"),
    [
        ([1, 12], "coco91", r"frame 4: label 12 at detection 1 is not a coco91 object label \(1 such; coco91 objects"),
        ([0, 0], "coco91", "label 0 at detection 0 is not a coco91 object label"),  # background
        ([0, 80], "coco80", r"label 80 at detection 1 is not a coco80 object label \(1 such; coco80 objects: 0..79\)"),
        ([0, 0.5], "coco80", "labels must be whole numbers, got 0.5 at detection 1"),
        ([0, True], "coco80", r"True \(bool\) is not a number"),
    ],
)
def test_unknown_labels_are_refused_not_dropped(labels, space, match):
    with pytest.raises(DetectionError, match=match):
        Detections.from_label_space(BOXES, labels, [0.9, 0.5], space, name="frame 4")


def test_coco_mapping_matches_the_shared_tables(shared_dir):
    for which, file in (("coco80", "coco80tohico80.json"), ("coco91", "coco91tohico80.json")):
        table = json.loads((shared_dir / "hicodet" / file).read_text())
        keys = sorted(int(k) for k in table)
        labels = [k - 1 for k in keys] if which == "coco80" else keys  # the shared coco80 table is 1-based
        assert to_hico_labels(labels, which).tolist() == [table[str(k)] for k in keys]


# --- bounds (issue 18 case 12) -------------------------------------------------------------------------------------


def test_boxes_outside_the_image_are_refused_with_a_word_on_exif():
    inside = Detections([[0, 0, 100, 50], [-1, -1, 101, 51]], [PERSON, BICYCLE], [0.9, 0.5], name="a.jpg")
    inside.check_bounds(100, 50)  # 1 px beyond the edges is the inclusive convention's, allowed
    Detections([[-2, 0, 102, 50]], [PERSON], [0.9]).check_bounds(100, 50)  # within 2 %
    rotated = Detections([[10, 60, 40, 95]], [PERSON], [0.9], name="a.jpg")  # boxes of the 50×100 EXIF-rotated frame
    with pytest.raises(DetectionError, match=r"a.jpg: box\(es\) at detection\(s\) \[0\].*100×50 image.*EXIF"):
        rotated.check_bounds(100, 50)
    for box in ([-5, 0, 10, 10], [0, -5, 10, 10], [0, 0, 105, 10], [0, 0, 10, 55]):
        with pytest.raises(DetectionError, match="outside"):
            Detections([box], [PERSON], [0.9]).check_bounds(100, 50)
    assert BOUNDS_TOLERANCE == 0.02
    Detections([[0, 0, 10, 200]], [PERSON], [0.9], in_image=False).check_bounds(100, 50)  # synthetic: not checked


# --- the one detections-file reader: by image and by frame ----------------------------------------------------------


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_by_image_and_by_frame_files_give_the_same_detections(tmp_path):
    entry = {"boxes": BOXES, "labels": [PERSON, BICYCLE], "scores": [0.9, 0.5]}
    by_name = load_detections(_jsonl(tmp_path / "a.jsonl", [{"filename": "x/a.jpg", **entry}]), ["a.jpg"])
    folder = tmp_path / "dets"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps(entry))
    by_folder = load_detections(folder, ["a.jpg"])
    by_frame = load_frame_detections(_jsonl(tmp_path / "f.jsonl", [{"frame": 0, **entry}]))
    keyed = tmp_path / "f.json"
    keyed.write_text(json.dumps({"0": entry}))
    for d in (by_name["a.jpg"], by_folder["a.jpg"], by_frame[0], load_frame_detections(keyed)[0]):
        assert isinstance(d, Detections) and d.to_dict() == by_name["a.jpg"].to_dict()
    coco = load_detections(tmp_path / "a.jsonl", ["a.jpg"], "coco80")["a.jpg"]  # 49 in COCO-80 is an orange
    assert coco.labels.tolist() == [vocab.hico().objects.index("orange"), vocab.hico().coco80_to_hico[BICYCLE]]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('"labels": [' + "9" * 400 + "]", r"integer 9999.*\(400 digits\) does not fit in 64 bits"),
        ('"labels": [' + "9" * 5000 + "]", r"integer 9+\.\.\. \(5000 digits\) does not fit in 64 bits"),
        ('"scores": [1e400]', "number 1e400 is out of range"),
        ('"scores": [NaN]', "NaN is not a JSON number"),
        ('"boxes": ' + "[" * 100_000 + "]" * 100_000, "nested too deeply to read"),
    ],
)
def test_hostile_json_in_detections_files_is_refused_by_name(tmp_path, text, match):
    """Issue 18 case 14 for ``defr detect``'s readers (JSONL and a folder of JSON files)."""
    line = '{"filename": "a.jpg", ' + text + "}"
    path = tmp_path / "d.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(InputFileError, match=f"d.jsonl, line 1: {match}"):
        load_detections(path, ["a.jpg"])
    folder = tmp_path / "dets"
    folder.mkdir()
    (folder / "a.json").write_text("{" + text + "}")
    with pytest.raises(InputFileError, match=f"a.json: {match}"):
        load_detections(folder, ["a.jpg"])


def test_bad_files_are_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"filename": "a.jpg", "boxes": [], "labels": [], "scores": ["\xff"]}\n')
    with pytest.raises(InputFileError, match="d.jsonl, line 1: not UTF-8"):
        load_detections(path, ["a.jpg"])
    _jsonl(path, [{"filename": "a.jpg", "boxes": [], "labels": [], "scores": []}] * 2)
    with pytest.raises(InputFileError, match=r"line 2: second entry for a.jpg \(first at line 1\)"):
        load_detections(path, ["a.jpg"])
    with pytest.raises(InputFileError, match=r"no detections for 1 image\(s\): b.jpg"):
        load_detections(_jsonl(path, [{"filename": "a.jpg", "boxes": [], "labels": [], "scores": []}]), ["b.jpg"])
    keyed = tmp_path / "f.json"
    keyed.write_text(json.dumps({"-1": {"boxes": [], "labels": [], "scores": []}}))
    with pytest.raises(InputFileError, match="frame keys must be whole numbers >= 0, got '-1'"):
        load_frame_detections(keyed)
    keyed.write_text("3")
    with pytest.raises(InputFileError, match="expected a list of frames or an object keyed by frame number"):
        load_frame_detections(keyed)
    with pytest.raises(ConfigError, match="label space"):
        load_frame_detections(keyed, "voc")


def test_two_images_of_one_stem_are_refused_with_a_detections_folder(tmp_path):
    """Issue 28 item 7: a.jpg and a.png would both take a.json's boxes."""
    folder = tmp_path / "dets"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps({"boxes": BOXES, "labels": [PERSON, BICYCLE], "scores": [0.9, 0.5]}))
    with pytest.raises(InputFileError, match=r"images 'a.jpg' and 'a.png' would both take a.json"):
        load_detections(folder, ["a.jpg", "a.png"])
    assert list(load_detections(folder, ["a.jpg"])) == ["a.jpg"]


@pytest.mark.slow
def test_detect_refuses_an_ambiguous_stem_in_one_line(tmp_path, tiny_model):
    from click.testing import CliRunner
    from PIL import Image

    from defr.cli import main
    from defr.model import save_checkpoint

    checkpoint = tmp_path / "model.safetensors"
    save_checkpoint(tiny_model, checkpoint)
    images, dets = tmp_path / "images", tmp_path / "dets"
    images.mkdir()
    dets.mkdir()
    Image.new("RGB", (32, 32)).save(images / "a.jpg")
    Image.new("RGB", (32, 32)).save(images / "a.png")
    (dets / "a.json").write_text('{"boxes": [], "labels": [], "scores": []}')
    args = ["detect", "--checkpoint", str(checkpoint), "--images", str(images), "--detections", str(dets)]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "out.json")])
    assert result.exit_code == 1 and "would both take a.json" in result.output, result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "out.json").exists()
