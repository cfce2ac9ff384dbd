"""A simple multi-label layout for your own data.

``ROOT/classes.json``: a JSON list of class names ("verb object", HICO's underscore names).
``ROOT/train.jsonl`` and ``ROOT/test.jsonl``: one object per line,
``{"image": "path/relative/to/ROOT.jpg", "labels": [class ids]}``. Listed classes are positives
(label 1), every other class a negative (label -1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from defr.data.hico import (
    DatasetError,
    HOIDataset,
    Transform,
    check_images_exist,
    class_objects,
    few_shot_classes,
    split_indices,
)
from defr.jsonio import JsonInputError, read_json
from defr.jsonio import read_jsonl as read_json_lines


def load_jsonl(
    root: str | Path, split: str, transform: Transform, val_fraction: float = 0.1, seed: int = 0
) -> HOIDataset:
    """The ``split`` of a JSONL dataset at ``root`` ("train"/"val": seeded split of ``train.jsonl``)."""
    root = Path(root)
    class_names = read_classes(root / "classes.json")
    train_paths, train_labels = read_jsonl(root / "train.jsonl", root, len(class_names))
    if split == "test":
        paths, labels = read_jsonl(root / "test.jsonl", root, len(class_names))
        source = root / "test.jsonl"
    else:
        keep = split_indices(len(train_paths), val_fraction, seed)[split == "val"]
        paths, labels, source = [train_paths[i] for i in keep], train_labels[keep], root / "train.jsonl"
    check_images_exist(paths, source)
    few = few_shot_classes(root, class_names, train_labels == 1)
    return HOIDataset(paths, labels, class_names, class_objects(class_names), few, transform)


def read_classes(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file (expected a JSON list of class names)")
    names = read_json(path, error=DatasetError)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise DatasetError(f'{path}: expected a non-empty JSON list of class names such as "ride bicycle"')
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DatasetError(f"{path}: repeated class name(s) {duplicates[:5]}")
    return names


def read_jsonl(path: Path, root: Path, num_classes: int) -> tuple[list[Path], np.ndarray]:
    """(image paths, labels [N, C] float32 of 1 / -1); blank lines are skipped."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    paths, rows = [], []
    try:
        for where, record in read_json_lines(path):
            image, ids = _parse_record(record, where, num_classes)
            paths.append(Path(image) if Path(image).is_absolute() else root / image)
            row = np.full(num_classes, -1.0, dtype=np.float32)
            row[ids] = 1.0
            rows.append(row)
    except JsonInputError as e:
        raise DatasetError(str(e)) from None
    if not rows:
        raise DatasetError(f"{path}: no records")
    return paths, np.stack(rows)


def _parse_record(record, where: str, num_classes: int) -> tuple[str, list[int]]:
    if not isinstance(record.get("image"), str) or not record["image"]:
        raise DatasetError(f'{where}: expected an object {{"image": "path", "labels": [class ids]}}')
    ids = record.get("labels")
    if not isinstance(ids, list) or not all(type(c) is int for c in ids):
        raise DatasetError(f"{where}: 'labels' must be a list of integer class ids")
    unknown = [c for c in ids if not 0 <= c < num_classes]
    if unknown:
        raise DatasetError(f"{where}: unknown class id(s) {unknown} (classes.json has {num_classes} classes)")
    return record["image"], ids
