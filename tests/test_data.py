import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from defr import vocab
from defr.data import DatasetError, build_dataset, oversampling_indices
from defr.data.transforms import eval_transform, train_transform

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
CLASSES = [("ride", "bicycle"), ("hold", "cup"), ("kick", "sports_ball")]


def write_hico(root: Path, train: np.ndarray, test: np.ndarray, classes=CLASSES, **override) -> Path:
    """A HICO-layout set: anno.mat in the official layout, tiny PNG images; ``override`` replaces mat fields."""
    actions = np.zeros((len(classes), 1), dtype=[("nname", object), ("vname", object), ("vname_ing", object)])
    for i, (verb, obj) in enumerate(classes):
        actions[i, 0] = (obj, verb, verb + "ing")
    mat = {"list_action": actions}
    for split, labels in (("train", train), ("test", test)):
        names = [f"HICO_{split}2015_{i + 1:08d}.png" for i in range(labels.shape[1])]
        folder = root / "images" / f"{split}2015"
        folder.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(names):
            Image.new("RGB", (12, 9), (10 * i % 255, 100, 200)).save(folder / name)
        mat[f"list_{split}"] = np.array(names, dtype=object)[:, None]
        mat[f"anno_{split}"] = labels
    mat.update(override)
    mat = {k: v for k, v in mat.items() if v is not None}
    scipy.io.savemat(root / "anno.mat", mat)
    return root


def labels(classes: int, images: int, seed: int = 0) -> np.ndarray:
    """C × N labels drawing from 1, 0, -1 and NaN."""
    rng = np.random.default_rng(seed)
    return rng.choice(np.array([1.0, 0.0, -1.0, np.nan]), size=(classes, images))


def build(root, split="train", name="hico", **kw):
    return build_dataset(name, root, split, 16, MEAN, STD, **kw)


# ------------------------------------------------------------------ HICO layout


def test_hico_values_targets_and_metadata(tmp_path):
    train, test = labels(3, 10), labels(3, 4, seed=1)
    train[:, 0] = [1, 0, np.nan]
    root = write_hico(tmp_path, train, test)
    ds = build(root, "test")
    assert len(ds) == 4 and ds.class_names == ["ride bicycle", "hold cup", "kick sports_ball"]
    np.testing.assert_array_equal(ds.labels, test.T.astype(np.float32))  # raw values kept, NaN included
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (3, 16, 16) and image.dtype == torch.float32
        assert target.dtype == torch.float32
        np.testing.assert_array_equal(target.numpy(), (test[:, i] == 1).astype(np.float32))
    objects = vocab.hico().objects
    assert [objects[o] for o in ds.class_objects] == ["bicycle", "cup", "sports_ball"]
    assert ds.image_paths[0] == root / "images" / "test2015" / "HICO_test2015_00000001.png"


def test_train_val_split_is_seeded_disjoint_and_90_10(tmp_path):
    root = write_hico(tmp_path, labels(3, 40), labels(3, 2))
    train, val = build(root, "train", seed=3), build(root, "val", seed=3)
    a, b = set(train.image_paths), set(val.image_paths)
    assert len(a) == 36 and len(b) == 4 and not a & b
    assert len(a | b) == 40
    assert set(build(root, "val", seed=3).image_paths) == b
    assert set(build(root, "val", seed=4).image_paths) != b
    assert len(build(root, "val", seed=3, val_fraction=0.25)) == 10
    # labels follow their images through the split
    full = scipy.io.loadmat(root / "anno.mat")["anno_train"].T
    for path, row in zip(val.image_paths, val.labels, strict=True):
        np.testing.assert_array_equal(row, full[int(path.stem[-8:]) - 1].astype(np.float32))


def test_few_shot_counted_from_train_or_read_from_file(tmp_path):
    train = -np.ones((3, 12))
    train[0, :12] = 1  # 12 images
    train[1, :4] = 1  # 4 images
    train[2, 5] = 1  # 1 image
    root = write_hico(tmp_path, train, labels(3, 2))
    assert build(root).few_shot == {1: [2], 5: [1, 2], 10: [1, 2]}
    (root / "few_shot_classes.json").write_text(json.dumps({"few_1": [0], "few_5": [0, 1], "few_10": [0, 1, 2]}))
    assert build(root).few_shot == {1: [0], 5: [0, 1], 10: [0, 1, 2]}
    (root / "few_shot_classes.json").write_text(json.dumps({"few_1": [7], "few_5": [], "few_10": []}))
    with pytest.raises(DatasetError, match="few_1"):
        build(root)


def test_hico_600_classes_use_the_vocabulary_few_shot_lists(tmp_path):
    v = vocab.hico()
    classes = [(v.verbs[vb], v.objects[o]) for vb, o in zip(v.hoi_verb, v.hoi_object, strict=True)]
    root = write_hico(tmp_path, labels(600, 2), labels(600, 1), classes=classes)
    ds = build(root, "test")
    assert ds.class_names == v.class_names and ds.few_shot == v.few
    assert ds.class_objects == v.hoi_object


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"anno_test": None}, r"anno\.mat: missing field\(s\) \['anno_test'\]"),
        ({"anno_train": np.ones((3, 9))}, r"'anno_train' has shape \(3, 9\); expected .* \(3, 10\)"),
        ({"anno_train": np.ones((10, 3))}, r"'anno_train' has shape \(10, 3\)"),
        ({"anno_test": np.full((3, 4), 2.0)}, r"'anno_test' has 12 value\(s\) other than 1/0/-1/NaN, e\.g\. 2\.0"),
        ({"list_action": np.ones((3, 1))}, "'list_action' must be a struct array"),
        ({"list_train": np.ones((10, 1))}, "'list_train' must be a cell array"),
    ],
)
def test_malformed_anno_mat_names_file_and_field(tmp_path, override, message):
    root = write_hico(tmp_path, labels(3, 10), labels(3, 4), **override)
    with pytest.raises(DatasetError, match=message) as err:
        build(root, "test")
    assert str(root / "anno.mat") in str(err.value)


def test_missing_anno_or_image_and_corrupt_image(tmp_path):
    with pytest.raises(DatasetError, match="anno.mat: no such file"):
        build(tmp_path)
    root = write_hico(tmp_path, labels(3, 10), labels(3, 4))
    missing = root / "images" / "test2015" / "HICO_test2015_00000003.png"
    missing.unlink()
    with pytest.raises(DatasetError, match=r"1 image\(s\) listed in .*anno\.mat do not exist: .*00000003\.png"):
        build(root, "test")  # up front, not mid-epoch
    (root / "images" / "train2015" / "HICO_train2015_00000001.png").write_bytes(b"not a png")
    ds = build(root, "train", val_fraction=0.1, seed=0)
    bad = ds.image_paths.index(root / "images" / "train2015" / "HICO_train2015_00000001.png")
    with pytest.raises(DatasetError, match="HICO_train2015_00000001.png: cannot read image"):
        ds[bad]


def test_build_dataset_rejects_bad_arguments(tmp_path):
    root = write_hico(tmp_path, labels(3, 10), labels(3, 4))
    with pytest.raises(ValueError, match="dataset must be one of"):
        build(root, name="coco")
    with pytest.raises(ValueError, match="split must be one of"):
        build(root, "dev")
    with pytest.raises(ValueError, match="val_fraction"):
        build(root, val_fraction=1.0)
    with pytest.raises(DatasetError, match="split 'val' has no images"):
        build(root, "val", val_fraction=0.0)
    with pytest.raises(DatasetError, match="run `defr synth"):
        build(tmp_path / "nothing", name="synth")


# ------------------------------------------------------------------ JSONL layout


def write_jsonl(root: Path, train: list, test: list, classes=("ride bicycle", "hold cup", "fly my_drone")) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    for i in range(10):
        Image.new("RGB", (10, 14), (i * 20, 0, 0)).save(root / "img" / f"{i}.jpg")
    (root / "classes.json").write_text(json.dumps(list(classes)))
    for name, records in (("train", train), ("test", test)):
        lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
        (root / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_jsonl_loader(tmp_path):
    train = [{"image": f"img/{i}.jpg", "labels": [0] if i < 8 else [1, 2]} for i in range(10)]
    test = [{"image": str(tmp_path / "img" / "3.jpg"), "labels": []}, "", {"image": "img/4.jpg", "labels": [2, 2]}]
    root = write_jsonl(tmp_path, train, test)
    ds = build(root, "test", name="jsonl")
    np.testing.assert_array_equal(ds.labels, [[-1, -1, -1], [-1, -1, 1]])
    assert ds[1][1].tolist() == [0.0, 0.0, 1.0] and ds[0][0].shape == (3, 16, 16)
    assert ds.class_objects[:2] == [9, 26] and ds.class_objects[2] == -1  # "my_drone" is not a HICO object
    assert ds.few_shot == {1: [], 5: [1, 2], 10: [0, 1, 2]}
    tr, va = build(root, "train", name="jsonl"), build(root, "val", name="jsonl")
    assert len(tr) == 9 and len(va) == 1 and not set(tr.image_paths) & set(va.image_paths)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ('{"image": "img/1.jpg", "labels": [0]', r"train\.jsonl, line 2: not valid JSON"),
        ({"image": "img/1.jpg", "labels": [3]}, r"train\.jsonl, line 2: unknown class id\(s\) \[3\]"),
        ({"image": "img/1.jpg", "labels": [-1]}, r"line 2: unknown class id\(s\) \[-1\]"),
        ({"image": "img/1.jpg", "labels": "0"}, "line 2: 'labels' must be a list of integer class ids"),
        ({"img": "img/1.jpg", "labels": [0]}, 'line 2: expected an object {"image"'),
        ({"image": "img/missing.jpg", "labels": [0]}, r"1 image\(s\) listed in .*train\.jsonl do not exist: .*missing"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, record, message):
    root = write_jsonl(
        tmp_path, [{"image": "img/0.jpg", "labels": [0]}, record], [{"image": "img/0.jpg", "labels": []}]
    )
    with pytest.raises(DatasetError, match=message):
        build(root, "train", name="jsonl", val_fraction=0.0)


def test_jsonl_bad_classes_file(tmp_path):
    root = write_jsonl(tmp_path, [{"image": "img/0.jpg", "labels": [0]}], [], classes=["a b", "a b"])
    with pytest.raises(DatasetError, match="classes.json: repeated class name"):
        build(root, "test", name="jsonl")
    (root / "classes.json").write_text('{"ride": 1}')
    with pytest.raises(DatasetError, match="classes.json: expected a non-empty JSON list"):
        build(root, "test", name="jsonl")


# ------------------------------------------------------------------ oversampling


def test_oversampling_reaches_min_positives_and_keeps_every_sample():
    rng = np.random.default_rng(0)
    targets = (rng.random((200, 12)) < np.geomspace(0.4, 0.002, 12)).astype(np.float32)
    targets[:, 11] = 0  # a class without positives
    targets[7, 10] = 1
    indices = oversampling_indices(targets, min_positives=30, seed=1)
    assert set(range(200)) <= set(indices) and all(isinstance(i, int) for i in indices)
    counts = targets[indices].sum(axis=0)
    has_positive = targets.sum(axis=0) > 0
    assert (counts[has_positive] >= 30).all() and counts[11] == 0
    assert indices.count(7) >= 30
    assert indices == oversampling_indices(targets, min_positives=30, seed=1)
    assert len(indices) < 200 + 30 * 11  # repeats of multi-label images count for every class they hold


def test_oversampling_without_deficit_is_identity_and_validates():
    targets = np.eye(4, dtype=np.float32).repeat(5, axis=0)
    assert oversampling_indices(targets, min_positives=5) == list(range(20))
    assert len(oversampling_indices(targets, min_positives=7)) == 20 + 4 * 2
    with pytest.raises(ValueError, match="only 0 and 1"):
        oversampling_indices(targets * 0.5)
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        oversampling_indices(np.ones(5))


# ------------------------------------------------------------------ transforms


def test_eval_transform_resizes_whole_image_and_normalises():
    colour = (200, 100, 50)
    out = eval_transform(32, MEAN, STD)(Image.new("RGB", (80, 20), colour))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    expected = (torch.tensor(colour) / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(out, expected[:, None, None].expand(3, 32, 32), atol=1e-5, rtol=0)
    left_half = Image.new("RGB", (80, 20), (0, 0, 0))
    left_half.paste((255, 255, 255), (0, 0, 40, 20))
    grey = eval_transform(32, (0, 0, 0), (1, 1, 1))(left_half)
    assert grey[:, :, :15].min() > 0.99 and grey[:, :, 17:].max() < 0.01  # aspect not kept: nothing cropped


def test_train_transform_shape_and_randomness():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    t = train_transform(24, MEAN, STD)
    torch.manual_seed(0)
    a, b = t(image), t(image)
    assert a.shape == b.shape == (3, 24, 24) and a.dtype == torch.float32
    assert not torch.equal(a, b)
    torch.manual_seed(0)
    assert torch.equal(t(image), a)  # torch's RNG drives it: seeded training is reproducible


def test_list_files_that_are_not_utf8_are_named(tmp_path):
    """Issue 18, case 18: a Latin-1 list file is one error naming it, not a UnicodeDecodeError."""
    root = write_jsonl(tmp_path, [{"image": "img/0.jpg", "labels": [0]}], [{"image": "img/0.jpg", "labels": []}])
    (root / "train.jsonl").write_bytes('{"image": "img/caf\u00e9.jpg", "labels": [0]}\n'.encode("latin-1"))
    with pytest.raises(DatasetError, match=r"train\.jsonl, line 1: not UTF-8 text \(byte 18\)"):
        build(root, "train", name="jsonl")
    (root / "train.jsonl").write_text('{"image": "img/0.jpg", "labels": [' + "9" * 400 + "]}\n")
    with pytest.raises(DatasetError, match=r"train\.jsonl, line 1: .*does not fit in 64 bits"):
        build(root, "train", name="jsonl")


def test_a_detect_image_list_that_is_not_utf8_is_named(tmp_path):
    from click.testing import CliRunner

    from defr.cli import main
    from defr.runtime.io import InputFileError, list_images

    listing = tmp_path / "images.txt"
    listing.write_bytes("caf\u00e9.jpg\n".encode("latin-1"))
    with pytest.raises(InputFileError, match=r"images\.txt: not UTF-8 text \(byte 3\)"):
        list_images(listing)
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"")
    args = ["detect", "--checkpoint", str(model), "--images", str(listing), "--detections", str(listing)]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "out.json")])
    assert result.exit_code == 1 and "images.txt: not UTF-8 text" in result.output, result.output
    assert result.exc_info[0] is SystemExit
