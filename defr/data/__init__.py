"""Datasets (HICO's official layout, JSONL, the synthetic HOI set), transforms and class-balanced sampling."""

from __future__ import annotations

from pathlib import Path

from defr.data.hico import SPLITS, DatasetError, HOIDataset, hicodet_files, load_hico
from defr.data.hicodet import HICODetAnnotations, load_annotations
from defr.data.jsonl import load_jsonl
from defr.data.sampling import oversampling_indices
from defr.data.synth import generate_synthetic
from defr.data.transforms import build_transform, eval_transform, train_transform
from defr.errors import ConfigError

DATASETS = ("hico", "jsonl", "synth")

__all__ = [
    "DATASETS",
    "SPLITS",
    "DatasetError",
    "HICODetAnnotations",
    "HOIDataset",
    "build_dataset",
    "build_transform",
    "eval_transform",
    "generate_synthetic",
    "hicodet_files",
    "load_annotations",
    "oversampling_indices",
    "train_transform",
]


def build_dataset(
    name: str,
    root: str | Path,
    split: str,
    image_size: int,
    mean: tuple,
    std: tuple,
    augment: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> HOIDataset:
    """The ``split`` ("train", "val", "test") of dataset ``name`` ("hico", "jsonl", "synth") at ``root``.

    "train" and "val" are a seeded (``seed``) split of the official train list, ``val_fraction`` of it
    to "val"; "test" is the official test list. ``augment`` applies the training augmentation.
    """
    if name not in DATASETS:
        raise ConfigError(f"dataset must be one of {list(DATASETS)}, not {name!r}")
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {list(SPLITS)}, not {split!r}")
    root = Path(root)
    if name == "synth" and not (root / "anno.mat").is_file():
        raise DatasetError(f"{root}: no synthetic dataset here (no anno.mat); run `defr synth {root}` first")
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    transform = build_transform(image_size, mean, std, augment)
    load = load_jsonl if name == "jsonl" else load_hico
    dataset = load(root, split, transform, val_fraction=val_fraction, seed=seed)
    if len(dataset) == 0:
        raise DatasetError(f"{root}: split {split!r} has no images (val_fraction={val_fraction})")
    return dataset
