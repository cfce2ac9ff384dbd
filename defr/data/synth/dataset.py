"""The data set writer: class frequencies (power law, pinned tail), images, anno.mat, HICO-DET instances.

The output folder is a ``defr.files.Folder`` output of the seam: built in a staged folder beside ``out``
and swapped in whole, the set's journal in the parent folder's manifest; synth never removes what it did
not write. ``out`` may be missing or empty, a set defr recorded there, or a set an earlier version wrote
(it holds ``defr-synth.json``, the marker every set carries): the set's own entries (``SET_ENTRIES``) are
replaced and anything else in the folder is kept (carried into the new folder as hard links). Any other
non-empty folder (a real HICO root, your files) is refused unless ``overwrite``, which replaces the
set's entries the same way (``images/`` as a whole) and keeps everything else.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import scipy.io
from tqdm import tqdm

from defr import vocab
from defr.data.synth.classes import CLASSES
from defr.data.synth.images import Annotation, draw_image
from defr.data.synth.pretraining import check_evaluation_seed
from defr.data.synth.settings import SETTINGS, SceneSetting, scene_setting
from defr.errors import ConfigError
from defr.files import Folder, OutputSet, atomic_path, clean_stale_staging, write_json

TRAIN_TAIL = (9, 7, 5, 3, 2, 1, 1, 1)  # train images of the rarest classes at full size
TEST_TAIL = (4, 4, 3, 3, 3, 2, 2, 2)
TAIL_REFERENCE = {"train": 700, "test": 230}  # pair slots at which the tail counts apply unscaled
POWER = 0.9  # body frequencies ∝ rank^-POWER
TEST_FRACTION = 0.25
MAX_IMAGES = 1_000_000  # a bound far above any real set, below what numpy can allocate for the split
AMBIGUOUS = 0.04  # fraction of known negatives marked ambiguous (0), so loaders meet every HICO value
MAT_HEADER = b"MATLAB 5.0 MAT-file, written by defr synth"
MARKER = "defr-synth.json"
MARKER_FORMAT = "defr-synth/1"
LEGACY_STAGING = "synth"  # staging folders of earlier versions: .OUT.synth-PID-XXXX beside the output folder
# Everything a set consists of (the marker besides).
SET_ENTRIES = ("images", "anno.mat", "instances_train2015.json", "instances_test2015.json", "few_shot_classes.json")


def class_counts(slots: int, n_images: int, split: str) -> np.ndarray:
    """Images per class ([C] int): a power law over the body, the pinned tail (scaled down for small sets)."""
    tail = np.array(TRAIN_TAIL if split == "train" else TEST_TAIL)
    tail = np.maximum(1, np.round(tail * min(1.0, slots / TAIL_REFERENCE[split]))).astype(int)
    body = len(CLASSES) - len(tail)
    weights = np.arange(1, body + 1, dtype=float) ** -POWER
    share = weights / weights.sum() * max(slots - int(tail.sum()), body)
    counts = np.floor(share).astype(int)
    counts[np.argsort(counts - share)[: int(round(share.sum())) - counts.sum()]] += 1  # largest remainders
    return np.minimum(np.concatenate([np.maximum(counts, 1), tail]), n_images)


def assign_classes(
    rng: np.random.Generator, n_images: int, split: str, setting: SceneSetting = SETTINGS["default"]
) -> list[list[int]]:
    """The classes (distinct, 1-4) of each image, matching ``class_counts`` as closely as capacity allows.

    setting: pairs per image and how strongly a class seeks images holding its object (``settings``).
    """
    probs = setting.pairs_per_image
    capacity = rng.choice(len(probs), size=n_images, p=probs) + 1
    counts = class_counts(int(capacity.sum()), n_images, split)
    images: list[list[int]] = [[] for _ in range(n_images)]
    objects = np.array([obj for _, obj in CLASSES])
    for c in np.argsort(-counts, kind="stable"):
        free = np.flatnonzero(capacity > 0)
        if len(free) == 0:
            break  # only tiny sets run out of room; their rarest classes stay absent
        weight = capacity[free].astype(float)
        if setting.same_object:
            shares = np.array([any(objects[k] == objects[c] for k in images[i]) for i in free])
            weight *= 1.0 + setting.same_object * shares
        chosen = rng.choice(free, size=min(counts[c], len(free)), replace=False, p=weight / weight.sum())
        for i in chosen:
            images[i].append(int(c))
            capacity[i] -= 1
    for classes in images:
        if not classes:
            classes.append(0)
        rng.shuffle(classes)
    return images


# --------------------------------------------------------------------------- writing the data set


def generate_synthetic(
    out: str | Path,
    images: int = 600,
    seed: int = 0,
    size: int = 128,
    overwrite: bool = False,
    setting: str = "default",
) -> Path:
    """Write a synthetic HOI set of ``images`` images (long side ``size`` px) to ``out``; returns ``out``.

    setting: a name in ``defr.data.synth.settings.SETTINGS`` (``default``, ``crowded``).

    Deterministic for a seed. ``out`` must be missing, empty or a previous synthetic set unless
    ``overwrite`` (module docstring: only the set's own entries are ever replaced). Raises
    ConfigError for bad settings and ``OutputRefused`` for a folder it may not write, before anything
    is written.
    """
    check_evaluation_seed(seed)
    if images < 8:
        raise ConfigError(f"images must be >= 8, got {images}")
    if images > MAX_IMAGES:  # 10**12 failed in numpy with a 5.46 TiB MemoryError traceback
        raise ConfigError(f"images must be <= {MAX_IMAGES:,} (HICO has 47,776), got {images}")
    if size < 32:
        raise ConfigError(f"size must be >= 32 pixels, got {size}")
    scenes = scene_setting(setting)
    out = Path(out)
    folder = Folder(out, entries=(*SET_ENTRIES, MARKER), marker=MARKER)
    with OutputSet({"data set": folder}, overwrite=overwrite) as staged:
        clean_stale_staging(out, LEGACY_STAGING)  # what a killed run of an earlier version left
        _write_set(staged["data set"], images, seed, size, scenes)
        marker = {"format": MARKER_FORMAT, "images": images, "seed": seed, "size": size, "setting": setting}
        write_json(marker, staged["data set"] / MARKER)
    return out


def is_synthetic_set(folder: Path) -> bool:
    """Whether ``folder`` holds a set written by synth: its marker. (An ``anno.mat`` with synth's stamp
    is no proof: one copied into a real data folder must not make that folder synth's to replace.)"""
    return (folder / MARKER).is_file()


def _write_set(root: Path, images: int, seed: int, size: int, setting: SceneSetting) -> None:
    rng = np.random.default_rng(seed)
    n_test = max(2, round(images * TEST_FRACTION))
    splits = {"train": images - n_test, "test": n_test}
    anns = {}
    with tqdm(total=images, desc="synth", unit="img", leave=False) as bar:
        for split, n in splits.items():
            folder = root / "images" / f"{split}2015"
            folder.mkdir(parents=True)
            anns[split] = []
            for i, classes in enumerate(assign_classes(rng, n, split, setting)):
                image, ann = draw_image(rng, classes, size, setting)
                image.save(folder / _file_name(split, i), quality=92)
                anns[split].append(ann)
                bar.update()
    train_counts = np.bincount([c for a in anns["train"] for c in a.classes], minlength=len(CLASSES))
    _write_mat(root / "anno.mat", anns, rng)
    for split in splits:
        write_json(_hicodet(split, anns[split], train_counts), root / f"instances_{split}2015.json")
    few = {f"few_{k}": [int(c) for c in np.flatnonzero((train_counts >= 1) & (train_counts <= k))] for k in (1, 5, 10)}
    write_json({"description": "classes with 1 / <=5 / <=10 training images", **few}, root / "few_shot_classes.json")


def _file_name(split: str, i: int) -> str:
    return f"HICO_{split}2015_{i + 1:08d}.jpg"


def _write_mat(path: Path, anns: dict[str, list[Annotation]], rng: np.random.Generator) -> None:
    """HICO's anno.mat: list_action (C × 1 struct), list_train/test (cells), anno_train/test (C × N)."""
    actions = np.zeros((len(CLASSES), 1), dtype=[("nname", object), ("vname", object), ("vname_ing", object)])
    for c, (verb, obj) in enumerate(CLASSES):
        words = verb.split("_")
        actions[c, 0] = (
            obj,
            verb,
            "_".join([vocab.gerund(words[0]), *words[1:]]) if verb != "no_interaction" else verb,
        )
    mat = {"list_action": actions}
    for split, split_anns in anns.items():
        mat[f"list_{split}"] = np.array([_file_name(split, i) for i in range(len(split_anns))], dtype=object)[:, None]
        mat[f"anno_{split}"] = _labels(split_anns, rng)
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, mat, do_compression=True)
    data = bytearray(buffer.getvalue())
    data[:116] = MAT_HEADER.ljust(116)  # scipy stamps the creation time here; a fixed text keeps output reproducible
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(bytes(data))


def _labels(anns: list[Annotation], rng: np.random.Generator) -> np.ndarray:
    """C × N HICO labels: 1 for the image's classes, -1 (sometimes 0) for other classes of its objects, NaN else."""
    labels = np.full((len(CLASSES), len(anns)), np.nan)
    objects = np.array([obj for _, obj in CLASSES])
    for n, ann in enumerate(anns):
        present = np.isin(objects, [CLASSES[c][1] for c in ann.classes])
        labels[present, n] = np.where(rng.random(int(present.sum())) < AMBIGUOUS, 0.0, -1.0)
        labels[ann.classes, n] = 1.0
    return labels


def _hicodet(split: str, anns: list[Annotation], train_counts: np.ndarray) -> dict:
    """The HICO-DET instances file: boxes 1-based inclusive (pixel x0..x1 written as x0 + 1 .. x1 + 1)."""
    v = vocab.hico()
    verb_id, object_id = {n: i for i, n in enumerate(v.verbs)}, {n: i for i, n in enumerate(v.objects)}
    rare = [c for c in range(len(CLASSES)) if train_counts[c] < 10]
    return {
        "annotation": [
            {
                "boxes_h": [[float(x + 1) for x in b] for b in a.boxes_h],
                "boxes_o": [[float(x + 1) for x in b] for b in a.boxes_o],
                "hoi": list(a.classes),
                "object": [object_id[CLASSES[c][1]] for c in a.classes],
                "verb": [verb_id[CLASSES[c][0]] for c in a.classes],
            }
            for a in anns
        ],
        "filenames": [_file_name(split, i) for i in range(len(anns))],
        "empty": [i for i, a in enumerate(anns) if not a.classes],
        "objects": list(v.objects),
        "verbs": list(v.verbs),
        "correspondence": [[c, object_id[o], verb_id[vb]] for c, (vb, o) in enumerate(CLASSES)],
        "size": [list(a.size) for a in anns],
        "rare": rare,
        "non_rare": [c for c in range(len(CLASSES)) if c not in rare],
    }
