"""HICO classification data: the official ``anno.mat`` layout and the dataset every loader returns.

``ROOT/anno.mat`` holds ``list_action`` (C × 1 struct: ``nname``, ``vname``, ``vname_ing``),
``list_train`` / ``list_test`` (cell arrays of file names) and ``anno_train`` / ``anno_test``
(C × N doubles: 1 positive, 0 ambiguous, -1 negative, NaN unknown). Images live in
``ROOT/images/train2015`` and ``ROOT/images/test2015``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import scipy.io
import torch
from PIL import Image

from defr import vocab
from defr.errors import ConfigError, DefrError
from defr.images import ImageInputError, decode_image
from defr.jsonio import read_json

ANNO = "anno.mat"
FEW_SHOT_FILE = "few_shot_classes.json"
SPLITS = ("train", "val", "test")


Transform = Callable[[Image.Image], torch.Tensor]  # a PIL image → the model's [3, S, S] input


class DatasetError(DefrError, ValueError):
    """Malformed or missing dataset files; the message names the file and what is wrong."""


class HOIDataset(torch.utils.data.Dataset):
    """Multi-label HOI images: ``(image [3, S, S] float32 normalised, target [C] float32 0/1)`` per item.

    ``labels`` keeps the raw HICO values ([N, C] float32: 1 / 0 / -1 / NaN); the training target is
    1 exactly where the label is 1 (ambiguous and unknown count as negatives, as in the paper).
    ``class_objects`` holds each class's HICO 80-object index, -1 where the object is not one of HICO's.
    """

    def __init__(
        self,
        image_paths: Sequence[Path],
        labels: np.ndarray,
        class_names: list[str],
        class_objects: list[int],
        few_shot: dict[int, list[int]],
        transform: Transform,
    ) -> None:
        labels = np.asarray(labels, dtype=np.float32)
        if labels.shape != (len(image_paths), len(class_names)):
            expected = (len(image_paths), len(class_names))
            raise DatasetError(f"labels have shape {labels.shape}; expected (images, classes) = {expected}")
        if len(class_objects) != len(class_names):
            raise DatasetError(f"{len(class_objects)} class objects for {len(class_names)} classes")
        self.image_paths = [Path(p) for p in image_paths]
        self.labels = labels
        self.class_names = list(class_names)
        self.class_objects = list(class_objects)
        self.few_shot = few_shot
        self.transform = transform

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.transform(load_image(self.image_paths[i]))
        target = torch.from_numpy((self.labels[i] == 1).astype(np.float32))
        return image, target


def image_folder(root: str | Path, split: str) -> Path:
    """``ROOT/images/test2015`` for "test", ``ROOT/images/train2015`` for "train" and "val"."""
    return Path(root) / "images" / ("test2015" if split == "test" else "train2015")


def hicodet_files(root: str | Path, split: str = "test") -> tuple[Path, Path]:
    """(annotations, images folder) of a split in HICO-DET's layout (the real one, or ``defr synth`` output):
    ``ROOT/instances_{split}2015.json`` and ``ROOT/images/{split}2015``."""
    year = "test2015" if split == "test" else "train2015"
    return Path(root) / f"instances_{year}.json", image_folder(root, split)


def load_image(path: Path) -> Image.Image:
    """An RGB image (``defr.images.decode_image``: the one decoder); a file it cannot use raises a
    ``DatasetError`` naming it."""
    try:
        return decode_image(path)
    except ImageInputError as e:
        raise DatasetError(str(e)) from None


def load_hico(
    root: str | Path, split: str, transform: Transform, val_fraction: float = 0.1, seed: int = 0
) -> HOIDataset:
    """The ``split`` of a HICO-layout dataset at ``root`` ("train"/"val": seeded split of the official train list)."""
    root = Path(root)
    anno = read_anno(root / ANNO)
    names = anno["list_train"] if split in ("train", "val") else anno["list_test"]
    labels = anno["anno_train"] if split in ("train", "val") else anno["anno_test"]
    folder = image_folder(root, split)
    paths = [folder / name for name in names]
    class_names = anno["class_names"]
    few = few_shot_classes(root, class_names, anno["anno_train"] == 1)
    if split != "test":
        keep = split_indices(len(paths), val_fraction, seed)[split == "val"]
        paths, labels = [paths[i] for i in keep], labels[keep]
    check_images_exist(paths, root / ANNO)
    return HOIDataset(paths, labels, class_names, class_objects(class_names), few, transform)


def read_anno(path: Path) -> dict:
    """``anno.mat`` → {class_names, list_train, list_test, anno_train [N, C], anno_test [N, C]}, validated."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file (expected HICO's anno.mat)")
    try:
        mat = scipy.io.loadmat(str(path))
    except NotImplementedError as e:  # MATLAB v7.3 files are HDF5
        raise DatasetError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; save it with -v7") from e
    except (ValueError, TypeError, OSError, scipy.io.matlab.MatReadError) as e:
        raise DatasetError(f"{path}: not a readable MATLAB file ({e})") from e
    missing = [f for f in ("list_action", "list_train", "list_test", "anno_train", "anno_test") if f not in mat]
    if missing:
        raise DatasetError(f"{path}: missing field(s) {missing}")
    out = {"class_names": _class_names(mat["list_action"], path)}
    for split in ("train", "test"):
        files = _strings(mat[f"list_{split}"], path, f"list_{split}")
        out[f"list_{split}"] = files
        out[f"anno_{split}"] = _labels(mat[f"anno_{split}"], path, f"anno_{split}", len(out["class_names"]), len(files))
    return out


def _class_names(actions: np.ndarray, path: Path) -> list[str]:
    if actions.dtype.names is None:
        raise DatasetError(f"{path}: field 'list_action' must be a struct array with fields nname and vname")
    missing = [f for f in ("nname", "vname") if f not in actions.dtype.names]
    if missing:
        raise DatasetError(f"{path}: field 'list_action' lacks sub-field(s) {missing}")
    actions = actions.reshape(-1)
    if len(actions) == 0:
        raise DatasetError(f"{path}: field 'list_action' is empty")
    verbs = [_string(a["vname"], path, f"list_action({i + 1}).vname") for i, a in enumerate(actions)]
    objects = [_string(a["nname"], path, f"list_action({i + 1}).nname") for i, a in enumerate(actions)]
    names = [f"{v} {o}" for v, o in zip(verbs, objects, strict=True)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DatasetError(f"{path}: field 'list_action' repeats class(es) {duplicates[:5]}")
    return names


def _string(value, path: Path, field: str) -> str:
    """A MATLAB char array as loaded by scipy (``array(['x'])``, possibly nested in 1 × 1 cells)."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.size == 1:
        value = value.reshape(-1)[0]
    if not isinstance(value, str) or not value:
        raise DatasetError(f"{path}: field '{field}' must be a non-empty string, got {value!r}")
    return value


def _strings(cell: np.ndarray, path: Path, field: str) -> list[str]:
    if not isinstance(cell, np.ndarray) or cell.dtype != object:
        raise DatasetError(f"{path}: field '{field}' must be a cell array of file names")
    return [_string(v, path, f"{field}{{{i + 1}}}") for i, v in enumerate(cell.reshape(-1))]


def _labels(values: np.ndarray, path: Path, field: str, classes: int, images: int) -> np.ndarray:
    """C × N MATLAB labels → [N, C] float32, every value one of 1, 0, -1, NaN."""
    if not isinstance(values, np.ndarray) or values.dtype.kind not in "fiu":
        raise DatasetError(f"{path}: field '{field}' must be a numeric array")
    if values.shape != (classes, images):
        raise DatasetError(
            f"{path}: field '{field}' has shape {values.shape}; expected (classes in list_action, images in "
            f"list_{field[5:]}) = ({classes}, {images})"
        )
    values = values.astype(np.float64)
    bad = ~(np.isnan(values) | np.isin(values, (1.0, 0.0, -1.0)))
    if bad.any():
        c, n = np.argwhere(bad)[0]
        raise DatasetError(
            f"{path}: field '{field}' has {int(bad.sum())} value(s) other than 1/0/-1/NaN, "
            f"e.g. {float(values[c, n])} at class {c}, image {n}"
        )
    return values.T.astype(np.float32)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) sorted indices of a seeded split of ``n`` items; val gets ``round(n·val_fraction)`` (≥ 1)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = min(max(round(n * val_fraction), 1 if val_fraction > 0 else 0), max(n - 1, 0))
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def check_images_exist(paths: Sequence[Path], source: Path) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DatasetError(f"{len(missing)} image(s) listed in {source} do not exist: {shown}{more}")


def class_objects(class_names: Sequence[str]) -> list[int]:
    """HICO 80-object index of each "verb object" class (-1 when the object is not a HICO object)."""
    v = vocab.hico()
    by_class = {name: v.hoi_object[c] for c, name in enumerate(v.class_names)}
    by_object = {name: i for i, name in enumerate(v.objects)}
    return [by_class.get(name, by_object.get(name.split(" ", 1)[-1], -1)) for name in class_names]


def few_shot_classes(root: Path, class_names: list[str], train_positives: np.ndarray) -> dict[int, list[int]]:
    """{1, 5, 10} → class ids with 1 / ≤5 / ≤10 training images.

    From ``ROOT/few_shot_classes.json`` when present, else HICO's lists for the 600 HICO classes,
    else counted from ``train_positives`` ([N, C] bool, the whole official train list).
    """
    path = root / FEW_SHOT_FILE
    if path.is_file():
        return _read_few_shot(path, len(class_names))
    if class_names == vocab.hico().class_names:
        return {k: list(ids) for k, ids in vocab.hico().few.items()}
    return count_few_shot(train_positives)


def count_few_shot(train_positives: np.ndarray) -> dict[int, list[int]]:
    counts = np.asarray(train_positives).sum(axis=0)
    return {k: [int(c) for c in np.flatnonzero((counts >= 1) & (counts <= k))] for k in vocab.FEW_SHOT_SIZES}


def _read_few_shot(path: Path, num_classes: int) -> dict[int, list[int]]:
    raw = read_json(path, error=DatasetError)
    few = {}
    for k in vocab.FEW_SHOT_SIZES:
        ids = raw.get(f"few_{k}") if isinstance(raw, dict) else None
        if not isinstance(ids, list) or not all(type(c) is int and 0 <= c < num_classes for c in ids):
            raise DatasetError(f"{path}: 'few_{k}' must be a list of class ids in [0, {num_classes})")
        few[k] = ids
    return few
