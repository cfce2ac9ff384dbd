"""Calibration data for ``defr-export --int8``: frames, their human–object pairs, and labels when the data has them.

Sources (``--calibration DATA``; the layout is recognised by ``detect_format``):

- ``hico``: HICO's classification layout, ``DATA/anno.mat`` + ``DATA/images/<split>2015`` (what
  ``defr synth`` writes too). Image labels from ``anno.mat``; when the split's HICO-DET file is there
  as well (``defr synth`` writes both), pairs from its ground-truth boxes and HICO-DET mAP in the gate.
- ``hicodet``: HICO-DET's layout, ``DATA/instances_<split>2015.json`` + ``DATA/images/<split>2015``:
  pairs from the ground-truth boxes; an image's labels are the classes of its GT pairs (1), every
  other class not annotated (NaN, ranked as a negative).
- ``jsonl``: ``DATA/classes.json`` + ``DATA/<split>.jsonl`` (``defr.data.jsonl``): labels, no boxes.
- ``folder``: a folder of images (or a text file listing them), with detections in ``DATA/detections/``
  (one JSON per image) or ``DATA/detections.jsonl`` when present (``defr detect``'s formats); no labels.
- ``synthetic`` (the default): ``defr synth``'s generator at the model's input size, written to a
  temporary folder; its test split, read as ``hico``.

Data without boxes gets seeded random detections per image (one person, three objects, anywhere in
the frame), so the pair path still sees masked attention. Detections become pairs by the runtime's
rules and frames are preprocessed by the runtime itself: the graph inputs are recorded from
``HOIDetector.detect``, so calibration sees exactly what the deployed graph sees (one call per image).

Images: up to 2·N are drawn (seeded) from the split; the first N calibrate, the others are held out
for the accuracy gate (``defr.export.accuracy``). Unreadable images, empty folders and unknown
layouts raise ``CalibrationError`` naming the file.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from defr import vocab
from defr.choices import DEFAULT_MASK_MODE, DEFAULT_PRECISION
from defr.data import build_dataset, generate_synthetic, hicodet_files
from defr.data.hicodet import HICODetAnnotations, load_annotations
from defr.data.synth.dataset import TEST_FRACTION
from defr.errors import DefrError
from defr.eval.gt_detections import noisy_gt_detections
from defr.export.errors import CalibrationError
from defr.images import ImageInputError, decode_image
from defr.jsonio import read_json
from defr.runtime.contract import INPUT_NAMES, RuntimeMeta
from defr.runtime.detector import HOIDetector
from defr.runtime.io import IMAGE_SUFFIXES, list_images, load_detections, read_image

CALIBRATION_FORMATS = ("hico", "hicodet", "jsonl", "folder")
SYNTHETIC = "synthetic"
RANDOM_OBJECTS = 3


@dataclass
class CalibrationSet:
    """Images of a calibration source with their detections and, when known, labels and HICO-DET GT.

    paths: [N] image files; detections: {file name: {"boxes" [K, 4] original pixels, "labels" [K]
    HICO objects, "scores" [K]}}; boxes: where the detections came from (``gt``, ``detections`` or
    ``random``); labels: [N, C] raw HICO labels (1 / 0 / -1 / NaN) over ``class_names``, or None;
    class_objects, few_shot: of those classes; annotations: HICO-DET ground truth of exactly these
    images, or None.
    """

    source: str
    format: str
    paths: list[Path]
    detections: dict[str, dict]
    boxes: str
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    class_objects: list[int] | None = None
    few_shot: dict[int, list[int]] | None = None
    annotations: HICODetAnnotations | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: list[int]) -> CalibrationSet:
        """The images at ``index`` (in that order), with their labels and ground truth."""
        paths = [self.paths[i] for i in index]
        labels = self.labels[index] if self.labels is not None else None
        annotations = _annotation_subset(self.annotations, [p.name for p in paths]) if self.annotations else None
        detections = {p.name: self.detections[p.name] for p in paths if p.name in self.detections}
        return dataclasses.replace(self, paths=paths, detections=detections, labels=labels, annotations=annotations)

    def split(self, calibration_images: int) -> tuple[CalibrationSet, CalibrationSet]:
        """(the first ``calibration_images`` images, the rest), the rest held out for the gate; at
        least one image in each."""
        if len(self) < 2:
            raise CalibrationError(f"{self.source}: {len(self)} image(s); calibration and its gate need at least 2")
        n = calibration_images if len(self) >= 2 * calibration_images else (len(self) + 1) // 2
        n = min(n, len(self) - 1)
        return self.subset(list(range(n))), self.subset(list(range(n, len(self))))

    def describe(self) -> dict:
        """What the sidecar records about it."""
        return {
            "source": self.source,
            "format": self.format,
            "images": len(self),
            "boxes": self.boxes,
            "labels": self.labels is not None,
            "hicodet_annotations": self.annotations is not None,
        }


def detect_format(root: Path, split: str = "test") -> str:
    """Which of ``CALIBRATION_FORMATS`` the folder (or image list file) ``root`` is; CalibrationError otherwise."""
    if root.is_file():
        return "folder"  # a text file listing images
    if not root.is_dir():
        raise CalibrationError(f"{root}: no such calibration folder")
    if (root / "anno.mat").is_file():
        return "hico"
    if hicodet_files(root, split)[0].is_file():
        return "hicodet"
    if (root / "classes.json").is_file():
        return "jsonl"
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir()):
        return "folder"
    raise CalibrationError(
        f"{root}: not calibration data: expected HICO (anno.mat + images/), HICO-DET "
        f"(instances_{split}2015.json + images/), JSONL (classes.json + {split}.jsonl), or a folder of images "
        f"({', '.join(IMAGE_SUFFIXES)}) with optional detections/ or detections.jsonl; the folder has none of these"
    )


def load_calibration_set(
    source: str | os.PathLike | None,
    images: int,
    meta: RuntimeMeta,
    workdir: str | os.PathLike,
    split: str = "test",
    seed: int = 0,
) -> CalibrationSet:
    """Up to ``2 · images`` images (seeded sample, the first ``images`` for calibration, the rest for
    the gate) from ``source``: a folder in one of ``CALIBRATION_FORMATS``, or None / ``"synthetic"``
    for the built-in synthetic set (generated into ``workdir`` at ``meta.image_size`` px).

    Raises CalibrationError for data that cannot be used (nothing written by the caller yet).
    """
    if images < 1:
        raise CalibrationError(f"--calibration-images must be >= 1, not {images}")
    try:
        if source is None or str(source) == SYNTHETIC:
            root = Path(workdir) / "synthetic"
            total = max(8, math.ceil(2 * images / TEST_FRACTION) + 2)
            generate_synthetic(root, images=total, seed=seed, size=meta.image_size)
            full = _read(root, "hico", "test", meta, seed)
            full.source, full.format = f"built-in synthetic set ({total} images, seed {seed}, test split)", SYNTHETIC
        else:
            root = Path(source)
            full = _read(root, detect_format(root, split), split, meta, seed)
    except CalibrationError:
        raise
    except DefrError as e:  # a dataset reader's error names the file; say it is the calibration data
        raise CalibrationError(f"calibration data: {e}") from None
    if not full.paths:
        raise CalibrationError(f"{full.source}: no images")
    order = np.random.default_rng(seed).permutation(len(full))[: 2 * images]
    drawn = full.subset(order.tolist())
    sizes = [_image_size(p) for p in drawn.paths]  # every drawn image readable, before anything is exported
    if drawn.boxes == "random":
        drawn.detections = _random_detections(drawn.paths, sizes, seed)
    return drawn


def _read(root: Path, fmt: str, split: str, meta: RuntimeMeta, seed: int) -> CalibrationSet:
    source = str(root) if fmt == "folder" else f"{root} ({split} split)"
    if fmt in ("hico", "jsonl"):
        dataset = build_dataset(fmt, root, split, meta.image_size, meta.mean, meta.std)
        paths = list(dataset.image_paths)
        labelled = dict(
            labels=dataset.labels,
            class_names=dataset.class_names,
            class_objects=dataset.class_objects,
            few_shot=dataset.few_shot,
        )
        annotations_path = hicodet_files(root, split)[0]
        if fmt == "hico" and annotations_path.is_file():
            annotations = load_annotations(annotations_path)
            annotated = set(annotations.filenames)
            keep = [i for i, p in enumerate(paths) if p.name in annotated]  # HICO and HICO-DET lists differ a little
            paths, labelled["labels"] = [paths[i] for i in keep], dataset.labels[keep]
            annotations = _annotation_subset(annotations, [p.name for p in paths])
            gt = noisy_gt_detections(annotations, 0.0)
            return CalibrationSet(source, fmt, paths, gt, "gt", annotations=annotations, **labelled)
        return CalibrationSet(source, fmt, paths, {}, "random", **labelled)  # drawn in load_calibration_set
    if fmt == "hicodet":
        annotations_path, images_dir = hicodet_files(root, split)
        annotations = load_annotations(annotations_path)
        paths = [images_dir / name for name in annotations.filenames]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise CalibrationError(f"{images_dir}: {len(missing)} annotated image(s) missing: {', '.join(missing[:5])}")
        names = hicodet_class_names(annotations_path, annotations.num_classes)
        labels = np.full((len(paths), annotations.num_classes), np.nan, dtype=np.float32)
        for i, hoi in enumerate(annotations.hoi):
            labels[i, hoi] = 1.0
        return CalibrationSet(
            source,
            fmt,
            paths,
            noisy_gt_detections(annotations, 0.0),
            "gt",
            labels=labels,
            class_names=names,
            class_objects=annotations.class_objects.tolist(),
            annotations=annotations,
        )
    paths = list_images(root)
    dets_dir, dets_jsonl = _detections_beside(root)
    if dets_dir is not None or dets_jsonl is not None:
        dets = load_detections(dets_dir or dets_jsonl, [p.name for p in paths])
        return CalibrationSet(source, fmt, paths, dets, "detections")
    return CalibrationSet(source, fmt, paths, {}, "random")


def _detections_beside(root: Path) -> tuple[Path | None, Path | None]:
    folder = root if root.is_dir() else root.parent
    dets_dir, dets_jsonl = folder / "detections", folder / "detections.jsonl"
    return (dets_dir if dets_dir.is_dir() else None), (dets_jsonl if dets_jsonl.is_file() else None)


def hicodet_class_names(path: Path, num_classes: int) -> list[str]:
    """The "verb object" name of each class of a HICO-DET instances file (its ``verbs``, ``objects`` and
    ``correspondence``); HICO's 600 names when the file does not list them."""
    data = read_json(path)
    verbs, objects, table = data.get("verbs"), data.get("objects"), data.get("correspondence")
    if isinstance(verbs, list) and isinstance(objects, list) and isinstance(table, list):
        names = [""] * num_classes
        for c, o, v in table:
            names[c] = f"{verbs[v]} {objects[o]}"
        return names
    if num_classes == len(vocab.hico().class_names):
        return list(vocab.hico().class_names)
    raise CalibrationError(f"{path}: no verbs / objects / correspondence lists to name its {num_classes} classes")


def _annotation_subset(annotations: HICODetAnnotations, names: list[str]) -> HICODetAnnotations:
    """The ground truth of the images ``names`` (in that order); CalibrationError for one it does not annotate."""
    index = {name: i for i, name in enumerate(annotations.filenames)}
    missing = [n for n in names if n not in index]
    if missing:
        raise CalibrationError(f"HICO-DET annotations lack {len(missing)} image(s): {', '.join(missing[:5])}")
    rows = [index[n] for n in names]
    return dataclasses.replace(
        annotations,
        filenames=list(names),
        sizes=annotations.sizes[rows],
        boxes_h=[annotations.boxes_h[i] for i in rows],
        boxes_o=[annotations.boxes_o[i] for i in rows],
        hoi=[annotations.hoi[i] for i in rows],
        object=[annotations.object[i] for i in rows],
    )


def _random_detections(paths: list[Path], sizes: list[tuple[int, int]], seed: int) -> dict[str, dict]:
    """Seeded detections for data without boxes: one person and ``RANDOM_OBJECTS`` objects per image,
    boxes anywhere in the frame (original pixels; ``sizes``: (width, height) of each image), score 1."""
    out = {}
    for i, (path, (width, height)) in enumerate(zip(paths, sizes, strict=True)):
        rng = np.random.default_rng([seed, i])
        k = 1 + RANDOM_OBJECTS
        corner = rng.random((k, 2)) * 0.6
        size = rng.random((k, 2)) * 0.35 + 0.05
        boxes = np.concatenate([corner, corner + size], axis=1) * [width, height, width, height]
        objects = rng.choice([o for o in range(len(vocab.hico().objects)) if o != vocab.PERSON], RANDOM_OBJECTS)
        labels = np.concatenate([[vocab.PERSON], objects]).astype(np.int64)
        out[path.name] = {"boxes": boxes.astype(np.float32), "labels": labels, "scores": np.ones(k, np.float32)}
    return out


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of a readable image as ``defr.images.decode_image`` gives it (upright);
    CalibrationError naming it otherwise (decoded in full, so a truncated file fails here and not
    halfway through the export)."""
    try:
        return decode_image(path).size
    except ImageInputError as e:
        raise CalibrationError(str(e)) from None


# --- graph inputs ---------------------------------------------------------------------------------------------


class _Recorder:
    """A ``PairBackend`` that keeps the inputs ``HOIDetector`` calls it with and returns zero logits."""

    accepts_no_pairs = False
    name = "recorder"
    precision = DEFAULT_PRECISION
    mask_mode = DEFAULT_MASK_MODE
    device = torch.device("cpu")

    def __init__(self, meta: RuntimeMeta):
        self.meta = meta
        self.calls: list[tuple[torch.Tensor, ...]] = []

    def __call__(self, images, boxes_h, boxes_o, pair_index):
        self.calls.append((images, boxes_h, boxes_o, pair_index))
        c = len(self.meta.class_names)
        return torch.zeros(pair_index.shape[0], c), torch.zeros(images.shape[0], c)


class GraphFeeds(Sequence):
    """The graph inputs of one call per image of ``cal``, ``{input name: array}`` exactly as
    ``HOIDetector`` feeds a backend (preprocessing, pairing rules, the dummy pair of an image without
    pairs). Computed when indexed (an image is read then), so a long calibration set is never all in
    memory at once."""

    def __init__(self, cal: CalibrationSet, meta: RuntimeMeta):
        self.cal = cal
        self._recorder = _Recorder(meta)
        self._detector = HOIDetector(self._recorder)

    def __len__(self) -> int:
        return len(self.cal)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:  # type: ignore[override]
        path = self.cal.paths[i]
        try:
            self._detector.detect([read_image(path)], [self.cal.detections[path.name]], names=[str(path)])
        except DefrError as e:
            raise CalibrationError(f"calibration data: {e}") from None
        inputs = self._recorder.calls.pop()
        return {name: x.numpy() for name, x in zip(INPUT_NAMES, inputs, strict=True)}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return (self[i] for i in range(len(self)))
