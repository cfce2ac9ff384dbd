"""HICO-DET annotations: the test split's ground truth from ``instances_test2015.json`` (the layout of the
released DEFR / hts code) or the official ``anno_bbox.mat`` (ho-rcnn), into one typed record.

GT boxes stay as the files give them: 1-based inclusive pixels ``[x1, y1, x2, y2]`` (the evaluator,
``defr.eval.hicodet``, shifts detections by +1 to match). Rare classes (< 10 training instances) come
from the JSON's ``rare`` list or are counted from the ``.mat`` file's ``bbox_train``. A malformed file is
an ``DatasetError`` naming the file and the field: the JSON file is read with ``defr.jsonio`` (huge
numbers, deep nesting and repeated keys refused), file names must be distinct non-empty strings, and GT
boxes follow ``defr.detections.check_boxes`` (four finite numbers, not inverted).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from defr import vocab
from defr.data.hico import DatasetError
from defr.detections import DetectionError, check_boxes
from defr.jsonio import read_json

RARE_BELOW = 10  # classes with fewer training instances are "rare"


@dataclass
class HICODetAnnotations:
    """Ground truth of one split; per-image arrays keep the file's pair order.

    boxes_h, boxes_o: per image [G, 4] float64, 1-based inclusive pixels; hoi, object: per image [G] int64;
    sizes: [N, 2] int64 (width, height); class_objects: [C] int64, each HOI class's object index.
    """

    filenames: list[str]
    sizes: np.ndarray
    boxes_h: list[np.ndarray]
    boxes_o: list[np.ndarray]
    hoi: list[np.ndarray]
    object: list[np.ndarray]
    class_objects: np.ndarray
    rare: list[int]
    non_rare: list[int]

    @property
    def num_classes(self) -> int:
        return len(self.class_objects)

    @property
    def num_images(self) -> int:
        return len(self.filenames)

    def num_gt(self) -> np.ndarray:
        """[C] int64: GT pairs per class."""
        hoi = np.concatenate([np.zeros(0, np.int64), *self.hoi])
        return np.bincount(hoi, minlength=self.num_classes)


def load_annotations(path: str | os.PathLike) -> HICODetAnnotations:
    """The test split of HICO-DET from ``instances_test2015.json`` or the official ``anno_bbox.mat``.

    The ``.mat`` file needs ``bbox_train`` too: rare classes (< 10 training instances) are counted from it.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such annotation file")
    if path.suffix == ".json":
        return _read_json_annotations(path)
    if path.suffix == ".mat":
        return _read_mat_annotations(path)
    raise DatasetError(f"{path}: expected an instances_*.json or anno_bbox.mat file (by suffix)")


def _read_json_annotations(path: Path) -> HICODetAnnotations:
    data = read_json(path, error=DatasetError)
    required = ("annotation", "filenames", "size", "correspondence", "rare", "non_rare")
    missing = [k for k in required if not isinstance(data, dict) or k not in data]
    if missing:
        raise DatasetError(f"{path}: not a HICO-DET instances file, missing key(s) {missing}")
    images, filenames, sizes = data["annotation"], data["filenames"], data["size"]
    if not all(isinstance(v, list) for v in (images, filenames, sizes)):
        raise DatasetError(f"{path}: 'annotation', 'filenames' and 'size' must be lists")
    if not len(images) == len(filenames) == len(sizes):
        raise DatasetError(
            f"{path}: {len(filenames)} filenames, {len(images)} annotations and {len(sizes)} sizes must match"
        )
    _check_filenames(filenames, f"{path}: 'filenames'")
    class_objects = _class_objects_from_correspondence(data["correspondence"], path)
    num_classes = len(class_objects)
    boxes_h, boxes_o, hoi, objects = [], [], [], []
    for name, image in zip(filenames, images, strict=True):
        h, o, c, obj = _json_pairs(image, f"{path}: {name}", num_classes)
        boxes_h.append(h)
        boxes_o.append(o)
        hoi.append(c)
        objects.append(obj)
    return HICODetAnnotations(
        filenames=list(filenames),
        sizes=_sizes(sizes, path),
        boxes_h=boxes_h,
        boxes_o=boxes_o,
        hoi=hoi,
        object=objects,
        class_objects=class_objects,
        rare=_class_list(data["rare"], num_classes, f"{path}: 'rare'"),
        non_rare=_class_list(data["non_rare"], num_classes, f"{path}: 'non_rare'"),
    )


def _class_objects_from_correspondence(correspondence, path: Path) -> np.ndarray:
    """[[hoi, object, verb], ...] → [C] object of each class; hoi ids must be exactly 0..C-1."""
    try:
        table = np.asarray(correspondence, dtype=np.int64).reshape(len(correspondence), 3)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: 'correspondence' must be a list of [hoi, object, verb] integers") from None
    if len(table) == 0 or sorted(table[:, 0].tolist()) != list(range(len(table))) or (table[:, 1] < 0).any():
        raise DatasetError(f"{path}: 'correspondence' must list each hoi id 0..C-1 once, with object ids >= 0")
    class_objects = np.empty(len(table), dtype=np.int64)
    class_objects[table[:, 0]] = table[:, 1]
    return class_objects


def _json_pairs(image, where: str, num_classes: int) -> tuple[np.ndarray, ...]:
    if not isinstance(image, dict) or any(k not in image for k in ("boxes_h", "boxes_o", "hoi", "object")):
        raise DatasetError(f"{where}: an annotation needs boxes_h, boxes_o, hoi and object")
    try:
        boxes_h, boxes_o = (
            check_boxes(image["boxes_h"], where, "boxes_h"),
            check_boxes(image["boxes_o"], where, "boxes_o"),
        )
    except DetectionError as e:
        raise DatasetError(str(e)) from None
    try:
        hoi = np.asarray(image["hoi"], dtype=np.int64).reshape(-1)
        obj = np.asarray(image["object"], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        raise DatasetError(f"{where}: boxes must be [G, 4] numbers, hoi and object [G] integers") from None
    if not len(boxes_h) == len(boxes_o) == len(hoi) == len(obj):
        raise DatasetError(
            f"{where}: {len(boxes_h)} human boxes, {len(boxes_o)} object boxes, {len(hoi)} hoi, {len(obj)} object"
        )
    if not (np.isfinite(boxes_h).all() and np.isfinite(boxes_o).all()):
        raise DatasetError(f"{where}: non-finite box coordinates")
    outside = sorted(set(hoi[(hoi < 0) | (hoi >= num_classes)].tolist()))
    if outside:
        raise DatasetError(f"{where}: hoi ids {outside[:5]} outside [0, {num_classes})")
    if (obj < 0).any():
        raise DatasetError(f"{where}: negative object ids")
    return boxes_h, boxes_o, hoi, obj


def _check_filenames(filenames: list, where: str) -> None:
    """Results are keyed by file name: each must be a non-empty string, each once."""
    bad = [f for f in filenames if not isinstance(f, str) or not f]
    if bad:
        raise DatasetError(f"{where}: file names must be non-empty strings, got {bad[0]!r}")
    seen: set[str] = set()
    for f in filenames:
        if f in seen:
            raise DatasetError(f"{where}: file name {f!r} appears twice (results are keyed by file name)")
        seen.add(f)


def box_array(value) -> np.ndarray:
    """[[x1, y1, x2, y2], ...] → [K, 4] float64 (an empty list gives [0, 4]); ValueError for another shape."""
    boxes = np.asarray(value, dtype=np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be [K, 4], got shape {boxes.shape}")
    return boxes


def _sizes(sizes, path: Path) -> np.ndarray:
    try:
        return np.asarray(sizes, dtype=np.int64).reshape(len(sizes), 2)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: 'size' must be a list of [width, height]") from None


def _class_list(ids, num_classes: int, where: str) -> list[int]:
    if not isinstance(ids, list) or not all(type(c) is int and 0 <= c < num_classes for c in ids):
        raise DatasetError(f"{where} must be a list of class ids in [0, {num_classes})")
    return list(ids)


def _read_mat_annotations(path: Path) -> HICODetAnnotations:
    """anno_bbox.mat: ``bbox_test`` / ``bbox_train`` (1 × N struct: filename, size, hoi) and ``list_action``.

    hoi (1 × K struct): id (1-based class), bboxhuman / bboxobject (struct arrays of x1, y1, x2, y2),
    connection ([M, 2], 1-based indices into them), invis (pairs marked invisible are not GT, as in eval_one.m).
    """
    try:
        mat = scipy.io.loadmat(str(path))
    except NotImplementedError:  # MATLAB v7.3 files are HDF5
        raise DatasetError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; save it with -v7") from None
    except (ValueError, TypeError, OSError, scipy.io.matlab.MatReadError) as e:
        raise DatasetError(f"{path}: not a readable MATLAB file ({e})") from None
    missing = [k for k in ("bbox_test", "list_action") if k not in mat]
    if missing:
        raise DatasetError(f"{path}: not HICO-DET's anno_bbox.mat, missing field(s) {missing}")
    if "bbox_train" not in mat:
        raise DatasetError(
            f"{path}: no 'bbox_train' to count rare classes from; use instances_test2015.json, which lists them"
        )
    class_objects = _mat_class_objects(mat["list_action"], path)
    num_classes = len(class_objects)
    filenames, sizes, boxes_h, boxes_o, hoi = [], [], [], [], []
    for i, entry in enumerate(_records(mat["bbox_test"])):
        where = f"{path}: bbox_test({i + 1})"
        try:
            filenames.append(_mat_string(entry["filename"]))
            size = _records(entry["size"])[0]
            sizes.append((_mat_scalar(size["width"]), _mat_scalar(size["height"])))
            h, o, c = _mat_pairs(entry["hoi"])
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise DatasetError(f"{where}: malformed entry ({type(e).__name__}: {e})") from None
        if ((c < 0) | (c >= num_classes)).any():
            raise DatasetError(f"{where}: hoi ids outside 1..{num_classes}")
        boxes_h.append(h)
        boxes_o.append(o)
        hoi.append(c)
    _check_filenames(filenames, f"{path}: bbox_test")
    for name, h, o in zip(filenames, boxes_h, boxes_o, strict=True):
        try:
            check_boxes(h, f"{path}: {name}", "bboxhuman")
            check_boxes(o, f"{path}: {name}", "bboxobject")
        except DetectionError as e:
            raise DatasetError(str(e)) from None
    counts = _mat_train_counts(mat["bbox_train"], num_classes, path)
    return HICODetAnnotations(
        filenames=filenames,
        sizes=np.asarray(sizes, dtype=np.int64).reshape(-1, 2),
        boxes_h=boxes_h,
        boxes_o=boxes_o,
        hoi=hoi,
        object=[class_objects[c] for c in hoi],
        class_objects=class_objects,
        rare=np.flatnonzero(counts < RARE_BELOW).tolist(),
        non_rare=np.flatnonzero(counts >= RARE_BELOW).tolist(),
    )


def _mat_class_objects(actions: np.ndarray, path: Path) -> np.ndarray:
    """list_action (C × 1 struct with nname) → [C] HICO object index of each class."""
    objects = {name: i for i, name in enumerate(vocab.hico().objects)}
    try:
        names = [_mat_string(a["nname"]) for a in _records(actions)]
    except (KeyError, IndexError, ValueError, TypeError):
        raise DatasetError(f"{path}: 'list_action' must be a struct array with a string field nname") from None
    unknown = sorted({n for n in names if n not in objects})
    if not names or unknown:
        raise DatasetError(f"{path}: 'list_action' names objects that are not HICO's: {unknown[:5]}")
    return np.array([objects[n] for n in names], dtype=np.int64)


def _mat_pairs(hois: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's hoi struct array → visible pairs: boxes_h [G, 4], boxes_o [G, 4], hoi [G] (0-based)."""
    boxes_h, boxes_o, hoi = [np.zeros((0, 4))], [np.zeros((0, 4))], [np.zeros(0, np.int64)]
    for entry in _records(hois):
        if _mat_scalar(entry["invis"]):
            continue
        connection = np.asarray(entry["connection"], dtype=np.int64).reshape(-1, 2) - 1
        humans = np.array([_mat_box(b) for b in _records(entry["bboxhuman"])]).reshape(-1, 4)
        objects = np.array([_mat_box(b) for b in _records(entry["bboxobject"])]).reshape(-1, 4)
        if (connection < 0).any():
            raise ValueError(f"connection indices must be >= 1, got {(connection + 1).tolist()}")
        boxes_h.append(humans[connection[:, 0]])
        boxes_o.append(objects[connection[:, 1]])
        hoi.append(np.full(len(connection), int(_mat_scalar(entry["id"])) - 1, dtype=np.int64))
    return np.concatenate(boxes_h), np.concatenate(boxes_o), np.concatenate(hoi)


def _mat_train_counts(bbox_train: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    """[C] visible training pairs per class (eval_one.m's ``num_inst``)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for i, entry in enumerate(_records(bbox_train)):
        try:
            for hoi in _records(entry["hoi"]):
                if not _mat_scalar(hoi["invis"]):
                    c = int(_mat_scalar(hoi["id"])) - 1
                    counts[c] += np.asarray(hoi["connection"]).reshape(-1, 2).shape[0]
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise DatasetError(f"{path}: bbox_train({i + 1}): malformed entry ({type(e).__name__}: {e})") from None
    return counts


def _records(value) -> list:
    """A MATLAB struct array as loaded by scipy (a structured ndarray, maybe in 1 × 1 cells) → its elements."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.reshape(-1)[0]
    if not isinstance(value, np.ndarray) or (value.size and value.dtype.names is None):
        raise TypeError(f"expected a struct array, got {type(value).__name__}")
    return list(value.reshape(-1))


def _mat_scalar(value) -> float:
    array = np.asarray(value, dtype=np.float64)
    if array.size != 1:
        raise ValueError(f"expected one number, got {array.size}")
    return float(array.reshape(-1)[0])


def _mat_string(value) -> str:
    while isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "OU":
        value = value.reshape(-1)[0]
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _mat_box(record) -> list[float]:
    return [_mat_scalar(record[k]) for k in ("x1", "y1", "x2", "y2")]
