import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner
from PIL import Image

from defr import vocab
from defr.cli import main
from defr.data import build_dataset, generate_synthetic, synth
from defr.data.synth import CLASSES
from defr.data.synth.dataset import MARKER, is_synthetic_set
from defr.data.synth.stats import format_stats_table, scene_stats
from defr.errors import ConfigError
from defr.files import MANIFEST, OutputRefused


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synth") / "set", images=160, seed=7, size=96)


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def instances(root: Path, split: str) -> dict:
    return json.loads((root / f"instances_{split}2015.json").read_text())


def test_files_in_official_layouts(synth_set):
    train, test = (
        sorted((synth_set / "images" / "train2015").iterdir()),
        sorted((synth_set / "images" / "test2015").iterdir()),
    )
    assert len(train) + len(test) == 160 and len(test) == 40
    assert train[0].name == "HICO_train2015_00000001.jpg" and test[-1].name == "HICO_test2015_00000040.jpg"
    mat = scipy.io.loadmat(synth_set / "anno.mat")
    assert mat["list_action"].shape == (len(CLASSES), 1) and mat["anno_train"].shape == (len(CLASSES), 120)
    assert set(mat["list_action"].dtype.names) == {"nname", "vname", "vname_ing"}
    names = [f"{a['vname'][0]} {a['nname'][0]}" for a in mat["list_action"][:, 0]]
    assert set(names) <= set(vocab.hico().class_names) and 20 <= len(names) <= 30
    values = mat["anno_test"]
    assert set(np.unique(values[~np.isnan(values)])) <= {1.0, 0.0, -1.0} and np.isnan(values).any()
    ds = build_dataset("synth", synth_set, "test", 64, (0.5,) * 3, (0.5,) * 3)
    assert ds.class_names == names and len(ds) == 40
    image, target = ds[0]
    assert image.shape == (3, 64, 64) and target.sum() >= 1
    few = json.loads((synth_set / "few_shot_classes.json").read_text())
    assert {k: few[f"few_{k}"] for k in (1, 5, 10)} == ds.few_shot


def test_labels_match_the_pairs(synth_set):
    mat = scipy.io.loadmat(synth_set / "anno.mat")
    for split in ("train", "test"):
        det = instances(synth_set, split)
        labels = mat[f"anno_{split}"]
        for n, ann in enumerate(det["annotation"]):
            assert 1 <= len(ann["hoi"]) <= 4 and len(set(ann["hoi"])) == len(ann["hoi"])
            assert set(np.flatnonzero(labels[:, n] == 1)) == set(ann["hoi"])  # the union of the image's pairs
            present = {CLASSES[c][1] for c in ann["hoi"]}
            known = {c for c in range(len(CLASSES)) if CLASSES[c][1] in present}
            assert set(np.flatnonzero(~np.isnan(labels[:, n]))) == known  # other classes of its objects: -1 / 0


def test_hicodet_json_has_the_real_structure(synth_set, shared_dir):
    real = json.loads((shared_dir / "hicodet" / "instances_test2015.json").read_text())
    v = vocab.hico()
    real_pairs = {(o, vb) for _, o, vb in real["correspondence"]}
    for split in ("train", "test"):
        ours = instances(synth_set, split)
        assert list(ours) == list(real)
        assert ours["objects"] == real["objects"] and ours["verbs"] == real["verbs"]
        assert_same_structure(ours["annotation"][0], real["annotation"][0])
        assert_same_structure(ours["size"][:1], real["size"][:1])
        assert_same_structure(ours["correspondence"][:1], real["correspondence"][:1])
        assert all(isinstance(x, list) for x in (ours["empty"], ours["rare"], ours["non_rare"]))
        assert [c[0] for c in ours["correspondence"]] == list(range(len(CLASSES)))
        for hoi, obj, verb in ours["correspondence"]:
            assert (obj, verb) in real_pairs and f"{v.verbs[verb]} {v.objects[obj]}" == " ".join(CLASSES[hoi])
        for ann in ours["annotation"]:
            assert ann["object"] == [ours["correspondence"][h][1] for h in ann["hoi"]]
            assert ann["verb"] == [ours["correspondence"][h][2] for h in ann["hoi"]]
            assert len(ann["boxes_h"]) == len(ann["boxes_o"]) == len(ann["hoi"])


def assert_same_structure(ours, real) -> None:
    assert type(ours) is type(real), (ours, real)
    if isinstance(real, dict):
        assert list(ours) == list(real)
        for k in real:
            assert_same_structure(ours[k], real[k])
    elif isinstance(real, list) and real and ours:
        assert_same_structure(ours[0], real[0])


def test_boxes_are_one_based_and_inside_images(synth_set):
    for split in ("train", "test"):
        det = instances(synth_set, split)
        for name, ann, (w, h) in zip(det["filenames"], det["annotation"], det["size"], strict=True):
            with Image.open(synth_set / "images" / f"{split}2015" / name) as image:
                assert image.size == (w, h)
            for box in ann["boxes_h"] + ann["boxes_o"]:
                x0, y0, x1, y1 = box
                assert all(isinstance(x, float) for x in box)
                assert 1 <= x0 <= x1 <= w and 1 <= y0 <= y1 <= h, (box, w, h)


def test_box_convention_is_pixel_index_plus_one():
    layer = Image.new("RGBA", (10, 8), (0, 0, 0, 0))
    layer.putpixel((0, 2), (255, 0, 0, 255))
    layer.putpixel((9, 7), (255, 0, 0, 255))
    assert synth.images.drawn_box(layer) == [0, 2, 9, 7]  # 0-based inclusive
    ann = synth.Annotation((10, 8), [0], [[0, 2, 9, 7]], [[3, 3, 3, 3]])
    det = synth.dataset._hicodet("train", [ann], np.full(len(CLASSES), 20))
    assert det["annotation"][0]["boxes_h"] == [[1.0, 3.0, 10.0, 8.0]] and det["annotation"][0]["boxes_o"] == [[4.0] * 4]
    assert det["rare"] == [] and det["non_rare"] == list(range(len(CLASSES)))


def test_long_tail_with_one_shot_classes(synth_set):
    det = instances(synth_set, "train")
    counts = np.bincount([h for a in det["annotation"] for h in a["hoi"]], minlength=len(CLASSES))
    assert det["rare"] == [c for c in range(len(CLASSES)) if counts[c] < 10]
    few = json.loads((synth_set / "few_shot_classes.json").read_text())
    assert few["few_1"] == [c for c in range(len(CLASSES)) if counts[c] == 1] and len(few["few_1"]) >= 2
    assert counts.max() >= 4 * np.median(counts) and counts[0] == counts.max()
    test_counts = np.bincount([h for a in instances(synth_set, "test")["annotation"] for h in a["hoi"]])
    assert (test_counts[few["few_1"]] >= 1).all()  # few-shot classes can be evaluated


def test_default_size_pins_the_tail():
    counts = synth.class_counts(830, 450, "train")
    assert list(counts[-8:]) == list(synth.TRAIN_TAIL) and counts[:-8].min() > 10
    assert (np.diff(counts) <= 0).all()


def test_same_seed_same_files_other_seed_differs(tmp_path):
    a = generate_synthetic(tmp_path / "a", images=12, seed=5, size=48)
    b = generate_synthetic(tmp_path / "b", images=12, seed=5, size=48)
    c = generate_synthetic(tmp_path / "c", images=12, seed=6, size=48)
    assert digests(a) == digests(b) and digests(a) != digests(c)
    assert generate_synthetic(a, images=12, seed=6, size=48) == a  # an earlier set is replaced
    assert digests(a) == digests(c)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.name != MANIFEST]  # no staging left


def test_split_into_a_package_kept_the_files(tmp_path):
    """The digest of this set as written by the single-module ``synth.py`` before it became a package."""
    root = generate_synthetic(tmp_path / "s", images=8, seed=1, size=48)
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MARKER:  # the marker came later (issue 18); the set itself is unchanged
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    assert h.hexdigest() == "aaa3366151e013d4172b4542c9d753b1695c76a86a2a2ae9c908f4988cc0675e"


@pytest.mark.parametrize("cls", range(len(CLASSES)))
def test_every_class_draws_its_verb(cls):
    """The geometry that carries each verb, checked on the boxes of single-pair images."""
    verb, obj = CLASSES[cls]
    rng = np.random.default_rng(cls)
    for _ in range(3):
        image, ann = synth.draw_image(rng, [cls], 128)
        (hx0, hy0, hx1, hy1), (ox0, oy0, ox1, oy1) = ann.boxes_h[0], ann.boxes_o[0]
        h = hy1 - hy0
        overlap_x = min(hx1, ox1) - max(hx0, ox0)
        if verb == "no_interaction":
            assert overlap_x < 0  # apart
        elif verb == "fly":
            assert oy1 < hy0  # high above
        elif verb in ("ride", "sit_on", "lie_on", "stand_on"):
            assert hy0 + hy1 < oy0 + oy1 and overlap_x > 0  # on top
        elif verb in ("carry", "stand_under"):
            assert oy0 < hy0 and overlap_x > 0  # above the head
        elif verb in ("kick", "walk", "drag"):
            assert oy1 > hy1 - 0.3 * h  # at foot level
        elif verb == "throw":
            assert oy1 < hy0 + 0.5 * h and overlap_x < 0.5 * (ox1 - ox0)  # up and away from the hand
        else:  # hold, drink_with, pet: touching
            assert overlap_x >= -1 and oy0 <= hy1
        assert image.size == ann.size and image.mode == "RGB"


def test_invalid_arguments_and_output(tmp_path):
    with pytest.raises(ConfigError, match="images must be >= 8"):
        generate_synthetic(tmp_path / "x", images=7)
    with pytest.raises(ConfigError, match="size must be >= 32"):
        generate_synthetic(tmp_path / "x", images=8, size=31)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputRefused, match=r"not empty \(notes.txt\) and not written by defr"):
        generate_synthetic(tmp_path / "mine", images=8)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_cli(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["synth", str(tmp_path / "out"), "--images", "10", "--size", "40", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "wrote 10 images" in result.output
    assert (tmp_path / "out" / "anno.mat").is_file() and (tmp_path / "out" / "instances_test2015.json").is_file()
    with Image.open(next((tmp_path / "out" / "images" / "train2015").iterdir())) as image:
        assert max(image.size) == 40
    result = runner.invoke(main, ["synth", str(tmp_path / "bad"), "--images", "3"])
    assert result.exit_code != 0 and "images must be >= 8" in result.output and "Traceback" not in result.output
    result = runner.invoke(main, ["synth", str(tmp_path / "bad"), "--images", str(10**12)])  # round 5: MemoryError
    assert (
        result.exit_code == 1
        and result.output == "Error: images must be <= 1,000,000 (HICO has 47,776), got 1000000000000\n"
    )
    assert not (tmp_path / "bad").exists()


def test_synth_never_removes_what_it_did_not_write(tmp_path):
    """A real HICO root (an ``anno.mat`` of its own, images, the user's files) is refused; with
    --overwrite only the set's entries are replaced; an earlier set keeps files added beside it."""
    hico = tmp_path / "hico"
    (hico / "images" / "train2015").mkdir(parents=True)
    (hico / "images" / "train2015" / "HICO_train2015_00000001.jpg").write_bytes(b"a real photo")
    (hico / "anno.mat").write_bytes(b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Thu Feb 12 2015")
    (hico / "my_labels.txt").write_text("x")
    before = digests(hico)
    result = CliRunner().invoke(main, ["synth", str(hico), "--images", "8", "--size", "32"])
    assert result.exit_code == 1 and "not written by defr" in result.output and "--overwrite" in result.output
    assert digests(hico) == before
    result = CliRunner().invoke(main, ["synth", str(hico), "--images", "8", "--size", "32", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (hico / "my_labels.txt").read_text() == "x" and (hico / MARKER).is_file()
    assert is_synthetic_set(hico) and len(list((hico / "images").rglob("*.jpg"))) == 8

    earlier = generate_synthetic(tmp_path / "earlier", images=8, seed=1, size=32)
    (earlier / "notes.txt").write_text("mine")
    generate_synthetic(earlier, images=8, seed=2, size=32)
    assert (earlier / "notes.txt").read_text() == "mine"
    assert json.loads((earlier / MARKER).read_text())["seed"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.name != MANIFEST]  # no staging left

    copied = tmp_path / "copied"  # the case: synth's own anno.mat copied into a folder of one's own
    (copied / "images" / "train2015").mkdir(parents=True)
    (copied / "images" / "train2015" / "mine.jpg").write_bytes(b"a photo")
    (copied / "anno.mat").write_bytes((earlier / "anno.mat").read_bytes())
    (copied / "my_labels.txt").write_text("x")
    before = digests(copied)
    with pytest.raises(OutputRefused, match="not written by defr"):
        generate_synthetic(copied, images=8, size=32)
    assert digests(copied) == before


def test_synth_writes_its_set_as_a_folder_output_of_the_seam(tmp_path):
    """Recorded as defr's in the parent's manifest; a killed run's staged folder is removed by the next run;
    a set an earlier version wrote (its marker, no manifest record) is replaced without --overwrite."""
    out = generate_synthetic(tmp_path / "set", images=8, seed=1, size=32)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["files"]["set"]["folder"] and [s["state"] for s in manifest["sets"].values()] == ["complete"]
    stale = tmp_path / ".set.defr-999999999-0badcafe"  # a staged folder whose run was killed (no such pid)
    (stale / "images").mkdir(parents=True)
    (tmp_path / MANIFEST).unlink()  # as an earlier version left it: the marker only
    generate_synthetic(out, images=8, seed=2, size=32)
    assert not stale.exists() and json.loads((out / MARKER).read_text())["seed"] == 2


# --- the crowded setting and scene statistics ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def crowded_set(tmp_path_factory) -> Path:
    return generate_synthetic(
        tmp_path_factory.mktemp("crowded") / "set", images=160, seed=7, size=96, setting="crowded"
    )


def _scenes(root: Path, split: str = "train"):
    d = instances(root, split)
    return [(tuple(s), a["boxes_h"], a["boxes_o"]) for s, a in zip(d["size"], d["annotation"], strict=True)]


def test_crowded_is_deterministic_and_not_the_default(crowded_set, synth_set, tmp_path):
    again = generate_synthetic(tmp_path / "again", images=160, seed=7, size=96, setting="crowded")
    assert digests(again) == digests(crowded_set)
    assert instances(crowded_set, "train")["annotation"] != instances(synth_set, "train")["annotation"]


def test_crowded_has_more_people_side_by_side_with_same_kind_objects(crowded_set, synth_set):
    crowded, default = scene_stats(_scenes(crowded_set)), scene_stats(_scenes(synth_set))
    assert crowded["people_mean"] > default["people_mean"] and crowded["one_pair"] < default["one_pair"]

    # same-object neighbours: images holding two pairs with one kind of object (the mask's case)
    def shared(root):
        return np.mean([len(a["object"]) > len(set(a["object"])) for a in instances(root, "train")["annotation"]])

    assert shared(crowded_set) > 1.5 * shared(synth_set)
    # one row: pair i's human box starts left of pair i + 1's cell end (columns left to right)
    for (w, _), boxes_h, _ in _scenes(crowded_set):
        centres = [(b[0] + b[2]) / 2 for b in boxes_h]
        n = len(centres)
        assert all(abs(c - (i + 0.5) * w / n) <= (0.5 + 0.5) * w / n + 1 for i, c in enumerate(centres))


def test_scene_stats_by_hand():
    """One 100×50 image: a person [0, 0, 9, 24] in two pairs (once re-annotated 1 px off: same entity), a
    second person [50, 0, 59, 24] and two objects."""
    scene = (
        (100, 50),
        [[0, 0, 9, 24], [0, 0, 9, 25], [50, 0, 59, 24]],
        [[10, 0, 19, 9], [10, 0, 19, 9], [60, 0, 69, 9]],
    )
    s = scene_stats([scene])
    assert (s["pairs_mean"], s["people_mean"], s["objects_mean"], s["two_plus_people"]) == (3, 2, 2, 1.0)
    assert s["human_width"]["median"] == pytest.approx(0.1) and s["human_height"]["median"] == pytest.approx(0.5)
    assert s["neighbour_gap"]["median"] == pytest.approx(0.5) and s["object_area"]["median"] == pytest.approx(0.02)
    assert "| people / scene (mean) | 2.00 |" in format_stats_table({"x": s})


def test_unknown_setting_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="crowded"):
        generate_synthetic(tmp_path / "x", images=8, setting="busy")
    r = CliRunner().invoke(main, ["synth", str(tmp_path / "y"), "--setting", "busy"])
    assert r.exit_code == 2


def test_hicodet_stats_script_prints_both_columns(tmp_path, capsys):
    """Synthetic columns always; HICO-DET's when ``../shared`` is there (skipped cleanly otherwise)."""
    from benchkit import load_benchmark

    module = load_benchmark("hicodet_stats")
    result = module.main(["--images", "40", "--size", "64", "--out", str(tmp_path / "s.json")])
    assert {"synth default", "synth crowded"} <= set(result["columns"])
    shared = Path(__file__).resolve().parents[2] / "shared" / "hicodet" / "instances_test2015.json"
    assert ("HICO-DET test" in result["columns"]) == shared.is_file()
    if shared.is_file():
        assert result["columns"]["HICO-DET test"]["scenes"] == 9658
    assert "nearest person gap" in capsys.readouterr().out
