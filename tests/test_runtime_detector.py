"""``HOIDetector`` and ``defr detect``: images + detections → scored triplets, against a by-hand pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from defr import vocab
from defr.cli import main
from defr.errors import ConfigError
from defr.model import save_checkpoint
from defr.runtime import (
    DetectionError,
    Detections,
    HOIDetector,
    ImageInputError,
    PairConfig,
    TorchBackend,
    make_pairs,
    pair_priors,
)
from defr.runtime.io import InputFileError, load_detections

PERSON, BICYCLE, CUP = vocab.PERSON, vocab.hico().objects.index("bicycle"), vocab.hico().objects.index("cup")


def _image(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _detections(w: int, h: int) -> dict:
    return {
        "boxes": [[0.1 * w, 0.1 * h, 0.5 * w, 0.9 * h], [0.4 * w, 0.5 * h, 0.95 * w, 0.95 * h], [0, 0, 10, 10]],
        "labels": [PERSON, BICYCLE, CUP],
        "scores": [0.9, 0.7, 0.1],  # the cup is below the 0.2 threshold
    }


@pytest.fixture
def detector(tiny_model) -> HOIDetector:
    return HOIDetector(TorchBackend(tiny_model), TorchBackend(tiny_model).meta)


def _by_hand(model, image: Image.Image, dets: dict) -> dict[tuple[int, int], float]:
    """{(pair, class): score} computed step by step, independently of HOIDetector."""
    s = model.cfg.backbone.image_size
    mean = torch.tensor(model.cfg.backbone.mean).view(3, 1, 1)
    std = torch.tensor(model.cfg.backbone.std).view(3, 1, 1)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # the documented rule: AA bicubic on uint8, /255
    x = TF.resize(x, [s, s], interpolation=TF.InterpolationMode.BICUBIC, antialias=True).float() / 255
    pairs = make_pairs(Detections.from_dict(dets), PairConfig())
    w, h = image.size
    scale = torch.tensor([s / w, s / h, s / w, s / h])
    with torch.no_grad():
        logits = model.forward_pairs(
            ((x - mean) / std)[None],
            pairs.boxes_h * scale,
            pairs.boxes_o * scale,
            torch.zeros(len(pairs), dtype=torch.long),
        )
    scores = torch.sigmoid(logits) * pair_priors(pairs, torch.tensor(vocab.hico().hoi_object), 2.8)
    return {(p, c): float(scores[p, c]) for p, c in (scores > 0).nonzero().tolist()}


def test_detect_matches_the_pipeline_by_hand(tiny_model, detector):
    image, dets = _image(120, 80, 0), _detections(120, 80)
    (result,) = detector.detect([image], [dets])
    expected = _by_hand(tiny_model, image, dets)
    assert len(result) == len(expected) > 0
    pairs = result.pairs
    for bh, bo, c, score in zip(result.boxes_h, result.boxes_o, result.hoi, result.scores, strict=True):
        p = next(
            i for i in range(len(pairs)) if torch.equal(pairs.boxes_h[i], bh) and torch.equal(pairs.boxes_o[i], bo)
        )
        assert float(score) == pytest.approx(expected[(p, int(c))], abs=1e-6)
        assert vocab.hico().hoi_object[int(c)] == int(result.object[list(result.hoi).index(c)])
    assert torch.all(result.scores[:-1] >= result.scores[1:])
    assert result.boxes_h.tolist()[0] == pytest.approx(dets["boxes"][0])  # boxes back in original pixels


def test_a_batch_equals_one_image_at_a_time(detector):
    sizes = [(120, 80), (64, 200), (33, 47)]
    images = [_image(w, h, i) for i, (w, h) in enumerate(sizes)]
    dets = [_detections(w, h) for w, h in sizes]
    dets[1] = {"boxes": [[0, 0, 5, 5]], "labels": [BICYCLE], "scores": [0.9]}  # no human: no pairs
    batch = detector.detect(images, dets)
    for image, d, r in zip(images, dets, batch, strict=True):
        (single,) = detector.detect([image], [d])
        assert torch.equal(single.hoi, r.hoi)
        assert torch.allclose(single.scores, r.scores, atol=1e-6)
        assert torch.allclose(single.image_logits, r.image_logits, atol=1e-5)
    assert len(batch[1]) == 0 and batch[1].image_logits.shape == (600,)


def test_image_types_give_the_same_result(detector):
    image, dets = _image(90, 70, 3), _detections(90, 70)
    array = np.array(image)
    tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    results = [
        detector.detect(image, dets)[0],
        detector.detect(array, dets)[0],
        detector.detect(tensor, dets)[0],
        detector.detect(tensor.float() / 255, dets)[0],
    ]
    for r in results[1:]:  # one preprocessing path: PIL, numpy, uint8 and float tensors agree
        assert torch.equal(r.hoi, results[0].hoi)
        assert (r.scores - results[0].scores).abs().max() <= 1e-5
        assert (r.image_logits - results[0].image_logits).abs().max() <= 1e-5


def test_empty_detections_and_frames_without_pairs(detector):
    empty = {"boxes": [], "labels": [], "scores": []}
    results = detector.detect([_image(50, 50, 1), _image(60, 40, 2)], [empty, empty])
    assert [len(r) for r in results] == [0, 0]
    assert all(r.image_logits.shape == (600,) for r in results)
    assert detector.detect([], []) == []


def test_top_k_and_min_score(tiny_model):
    base = TorchBackend(tiny_model)
    image, dets = _image(120, 80, 0), _detections(120, 80)
    everything = HOIDetector(base, base.meta).detect(image, dets)[0]
    top = HOIDetector(base, base.meta, top_k=3).detect(image, dets)[0]
    assert torch.equal(top.scores, everything.scores[:3])
    cut = float(everything.scores[len(everything) // 2])
    above = HOIDetector(base, base.meta, min_score=cut).detect(image, dets)[0]
    assert bool((above.scores > cut).all()) and len(above) == int((everything.scores > cut).sum())


@pytest.mark.parametrize(
    ("dets", "match"),
    [
        ({"boxes": [[0, 0, float("nan"), 5]], "labels": [PERSON], "scores": [0.9]}, "NaN"),
        ({"boxes": [[10, 10, 5, 20]], "labels": [PERSON], "scores": [0.9]}, "inverted"),
        ({"boxes": [[0, 0, 5, 5]], "labels": [80], "scores": [0.9]}, "0..79"),
        ({"boxes": [[0, 0, 5, 5]], "labels": [PERSON], "scores": [1.5]}, r"\[0, 1\]"),
        ({"boxes": [[0, 0, 5]], "labels": [PERSON], "scores": [0.9]}, r"\[N, 4\]"),
        ({"boxes": [[0, 0, 5, 5]], "labels": [PERSON]}, "scores"),
    ],
)
def test_bad_detections_are_named(detector, dets, match):
    with pytest.raises(DetectionError, match=match):
        detector.detect([_image(20, 20, 0)], [dets], names=["frame.jpg"])


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((10, 10), dtype=np.uint8),
        np.zeros((10, 10, 3), dtype=np.float32),
        torch.rand(4, 8, 8),
        torch.rand(3, 8, 8) * 2,
        "x.jpg",
    ],
)
def test_bad_images_are_named(detector, image):
    with pytest.raises(ImageInputError, match="frame.jpg"):
        detector.detect([image], [{"boxes": [], "labels": [], "scores": []}], names=["frame.jpg"])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"boxes": [[0, 0, 5, 5]], "labels": ["22"], "scores": [0.9]}, r"labels is not a numeric array: '22' \(str\)"),
        ({"boxes": [[0, 0, 5, 5]], "labels": [22], "scores": [True]}, r"scores is not a numeric array: True \(bool\)"),
        ({"boxes": [[0, "0", 5, 5]], "labels": [22], "scores": [0.5]}, "boxes is not a numeric array"),
        ({"boxes": [[0, 0, 5, 5]], "labels": [22.5], "scores": [0.5]}, "labels must be whole numbers"),
    ],
)
def test_detections_of_the_wrong_json_types_are_refused(tmp_path, entry, message):
    path = tmp_path / "dets.jsonl"
    path.write_text(json.dumps({"filename": "a.jpg", **entry}))
    with pytest.raises(InputFileError, match=f"a.jpg.*{message}"):
        load_detections(path, ["a.jpg"])


def test_detections_of_the_wrong_types_through_the_api(tiny_model):
    detector = HOIDetector(TorchBackend(tiny_model))
    image = np.zeros((40, 50, 3), np.uint8)
    with pytest.raises(DetectionError, match="frame: labels is not a numeric array: '22'"):
        detector.detect([image], [{"boxes": [[0, 0, 5, 5]], "labels": ["22"], "scores": [0.9]}], names=["frame"])
    dets = {"boxes": [[0, 0, 5, 5]], "labels": [vocab.PERSON], "scores": [0.9]}
    with pytest.raises(DetectionError, match=r"one image \(ndarray\) and a list of 1 detection entries"):
        detector.detect(image, [dets])


def test_mismatched_image_and_detection_counts(detector):
    with pytest.raises(DetectionError, match="2 images but 1"):
        detector.detect([_image(9, 9, 0), _image(9, 9, 1)], [{"boxes": [], "labels": [], "scores": []}])


def test_dicts_detections_and_label_spaces_give_the_same_results(detector):
    image, dets = _image(120, 80, 0), _detections(120, 80)
    ref = detector.detect(image, dets)[0]
    coco80 = [{v: k for k, v in vocab.hico().coco80_to_hico.items()}[x] for x in dets["labels"]]
    for other in (
        Detections.from_dict(dets),
        {k: np.asarray(v) for k, v in dets.items()},
        {k: torch.tensor(v) for k, v in dets.items()},
    ):
        assert torch.equal(detector.detect(image, other)[0].scores, ref.scores)
    got = detector.detect(image, {**dets, "labels": coco80}, label_space="coco80")[0]
    assert torch.equal(got.scores, ref.scores) and torch.equal(got.object, ref.object)
    with pytest.raises(DetectionError, match="frame.jpg: label 80 at detection 0 is not a coco80 object label"):
        detector.detect(image, {**dets, "labels": [80, 0, 0]}, names=["frame.jpg"], label_space="coco80")


# --- issue 18 case 22: the API refuses like the files do, with project errors -----------------------------------


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("labels", np.array([True, False, False]), "frame.jpg: labels must be real numbers, got a numpy bool array"),
        ("scores", np.array(["0.9", "0.7", "0.1"]), "frame.jpg: scores must be real numbers, got a numpy <U3 array"),
        ("labels", [PERSON + 0.9, BICYCLE, CUP], "frame.jpg: labels must be whole numbers, got 49.9"),
        ("scores", [True, 0.7, 0.1], r"frame.jpg: scores is not a numeric array: True \(bool\)"),
    ],
)
def test_numpy_bools_and_strings_are_refused_like_lists(detector, field, value, match):
    dets = {**_detections(120, 80), field: value}
    with pytest.raises(DetectionError, match=match):
        detector.detect([_image(120, 80, 0)], [dets], names=["frame.jpg"])


def test_api_argument_errors_are_project_errors_said_up_front(tiny_model, detector):
    image, dets = _image(40, 30, 0), {"boxes": [], "labels": [], "scores": []}
    with pytest.raises(ConfigError, match=r"names must be a list with one name per image: 2 names for 1 image\(s\)"):
        detector.detect([image], [dets], names=["a.jpg", "b.jpg"])
    with pytest.raises(ConfigError, match="names must be a list with one name per image: a string"):
        detector.prepare([image], names="a.jpg")
    closed = _image(40, 30, 0)
    closed.close()
    with pytest.raises(ImageInputError, match="a.jpg: the PIL image is closed"):
        detector.detect([closed], [dets], names=["a.jpg"])
    backend = TorchBackend(tiny_model)
    for top_k in (1.5, 0, True, "3"):
        with pytest.raises(ConfigError, match="top_k must be a whole number >= 1 or None"):
            HOIDetector(backend, top_k=top_k)
    for min_score in (float("nan"), -0.1, "0.5"):
        with pytest.raises(ConfigError, match=r"min_score must be a number in \[0, 1\]"):
            HOIDetector(backend, min_score=min_score)
    with pytest.raises(ImageInputError, match="H×W×3 uint8"):  # what the preprocess docs now say
        detector.preprocess(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ConfigError, match="label space"):
        detector.detect([image], [dets], label_space="voc")


# --- issue 18 case 12: boxes outside the decoded image ------------------------------------------------------------


def test_boxes_outside_the_decoded_image_are_refused_naming_exif(detector):
    landscape = _image(120, 80, 0)
    rotated = {"boxes": [[10, 10, 60, 110]], "labels": [PERSON], "scores": [0.9]}  # boxes of the 80×120 portrait
    with pytest.raises(DetectionError, match=r"IMG_1.jpg: box\(es\) at detection\(s\) \[0\].*120×80 .*EXIF"):
        detector.detect([landscape], [rotated], names=["IMG_1.jpg"])
    inputs, sizes = detector.prepare([landscape])
    with pytest.raises(DetectionError, match="frame 7: box.*EXIF"):  # the image's name, not the record's
        detector.detect_prepared(inputs, sizes, [Detections.from_dict(rotated)], names=["frame 7"])
    edge = {"boxes": [[-1, -1, 121, 81]], "labels": [PERSON], "scores": [0.9]}  # 1 px beyond: inclusive pixels
    assert detector.detect([landscape], [edge])[0].image_logits.shape == (600,)
    synthetic = Detections(rotated["boxes"], [PERSON], [0.9], in_image=False)  # a box-noise study's boxes
    assert detector.detect([landscape], [synthetic])[0].image_logits.shape == (600,)


def _write_inputs(tmp_path, n: int = 3) -> tuple:
    images, dets = tmp_path / "images", tmp_path / "dets"
    images.mkdir()
    dets.mkdir()
    lines = []
    for i in range(n):
        w, h = 60 + 10 * i, 50
        name = f"frame_{i}.jpg"
        _image(w, h, i).save(images / name, quality=95)
        d = _detections(w, h)
        (dets / f"frame_{i}.json").write_text(json.dumps(d))
        lines.append(json.dumps({"filename": name, **d}))
    (tmp_path / "dets.jsonl").write_text("\n".join(lines))
    return images, dets


def test_detect_cli_from_a_folder_and_a_jsonl(tiny_model, tmp_path):
    ckpt = tmp_path / "model.safetensors"
    save_checkpoint(tiny_model, ckpt)
    images, dets = _write_inputs(tmp_path)
    runner = CliRunner()
    outs = []
    for source in (dets, tmp_path / "dets.jsonl"):
        out = tmp_path / f"results_{source.name}.json"
        r = runner.invoke(
            main,
            [
                "detect",
                "--checkpoint",
                str(ckpt),
                "--images",
                str(images),
                "--detections",
                str(source),
                "--out",
                str(out),
                "--batch-size",
                "2",
            ],
        )
        assert r.exit_code == 0, r.output
        outs.append(json.loads(out.read_text()))
    assert sorted(outs[0]) == [f"frame_{i}.jpg" for i in range(3)]
    assert outs[0] == outs[1]
    detector = HOIDetector.from_checkpoint(ckpt)
    direct = detector.detect(Image.open(images / "frame_1.jpg"), _detections(70, 50))[0].to_json()
    assert outs[0]["frame_1.jpg"]["hoi"] == direct["hoi"]
    assert outs[0]["frame_1.jpg"]["scores"] == pytest.approx(direct["scores"], abs=1e-6)


def test_detect_cli_errors(tiny_model, tmp_path):
    ckpt = tmp_path / "model.safetensors"
    save_checkpoint(tiny_model, ckpt)
    images, dets = _write_inputs(tmp_path)
    out = tmp_path / "r.json"
    io_args = ["--images", str(images), "--detections", str(dets), "--out", str(out)]
    not_ckpt = tmp_path / "x.safetensors"
    not_ckpt.write_bytes(b"garbage")
    r = CliRunner().invoke(main, ["detect", "--checkpoint", str(not_ckpt), *io_args])
    assert r.exit_code != 0 and "x.safetensors" in r.output and not out.exists()
    (dets / "frame_2.json").unlink()
    args = ["detect", "--checkpoint", str(ckpt), "--images", str(images), "--out", str(out)]
    r = CliRunner().invoke(main, [*args, "--detections", str(dets)])
    assert r.exit_code != 0 and "frame_2.json" in r.output and not out.exists()
    (images / "frame_0.jpg").write_bytes(b"not a jpeg")
    r = CliRunner().invoke(main, [*args, "--detections", str(tmp_path / "dets.jsonl")])
    assert r.exit_code != 0 and "frame_0.jpg" in r.output and not out.exists()
