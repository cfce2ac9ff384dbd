"""Robustness to detector box noise (the paper's appendix, Fig. 6), and the detection stage of ``defr demo``.

The "detector" is the ground truth: the distinct GT boxes of each test image (human boxes with
label 49, object boxes with their object label, score 1.0), converted from the annotation files'
1-based inclusive pixels to 0-based ones by subtracting 1 from every coordinate (the HICO-DET
evaluator adds the 1 back). Each coordinate then gets Gaussian noise scaled by the box size:
``x' = x + N(0, r·W_box)``, ``y' = y + N(0, r·H_box)``; a box whose corners cross is re-ordered
(min / max per axis) so it stays valid. The same standard-normal draws are used for every ratio
r (seeded per image), so the curve over r is smooth rather than re-sampled.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np

from defr import vocab
from defr.errors import ConfigError
from defr.files import atomic_path, write_json
from defr.runtime.cli import run_detection
from defr.runtime.detector import HOIDetector
from defr.runtime.io import InputFileError, read_image

METRICS = ("full", "rare", "non_rare")


def read_annotation_file(path: str | os.PathLike) -> dict:
    """The raw HICO-DET-format annotation JSON (``filenames``, ``annotation``, ``size``, ...)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputFileError(f"{path}: cannot read annotations ({e})") from None
    if not isinstance(data, dict) or any(k not in data for k in ("filenames", "annotation")):
        raise InputFileError(f"{path}: not a HICO-DET annotation file (needs 'filenames' and 'annotation')")
    if len(data["filenames"]) != len(data["annotation"]):
        raise InputFileError(f"{path}: {len(data['filenames'])} filenames but {len(data['annotation'])} annotations")
    return data


def gt_detections(annotation: dict) -> dict:
    """One image's GT as detections: distinct boxes, 0-based pixels, labels (humans 49), scores 1."""
    entries = {}  # (box, label) → None, in first-seen order
    for box in annotation["boxes_h"]:
        entries[(tuple(box), vocab.PERSON)] = None
    for box, obj in zip(annotation["boxes_o"], annotation["object"], strict=True):
        entries[(tuple(box), int(obj))] = None
    boxes = np.array([b for b, _ in entries], dtype=np.float64).reshape(-1, 4) - 1.0
    labels = np.array([label for _, label in entries], dtype=np.int64)
    return {"boxes": boxes, "labels": labels, "scores": np.ones(len(labels), dtype=np.float32)}


def add_box_noise(boxes: np.ndarray, ratio: float, eps: np.ndarray) -> np.ndarray:
    """boxes: [N, 4] (x1, y1, x2, y2); eps: [N, 4] standard normal → noisy boxes, corners re-ordered."""
    if ratio < 0:
        raise ConfigError(f"noise ratio must be >= 0, not {ratio}")
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    noisy = boxes + ratio * eps * np.stack([w, h, w, h], axis=1)
    x, y = noisy[:, 0::2], noisy[:, 1::2]
    return np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], axis=1)


def noisy_gt_detections(data: dict, ratio: float, seed: int = 0) -> dict[str, dict]:
    """{filename: detections} of every annotated image, GT boxes with noise ``ratio``."""
    out = {}
    for i, (name, ann) in enumerate(zip(data["filenames"], data["annotation"], strict=True)):
        dets = gt_detections(ann)
        eps = np.random.default_rng([seed, i]).standard_normal(dets["boxes"].shape)
        dets["boxes"] = add_box_noise(dets["boxes"], ratio, eps).astype(np.float32)
        out[name] = dets
    return out


def _image_paths(data: dict, images_dir: Path) -> list[Path]:
    paths = [Path(images_dir) / name for name in data["filenames"]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise InputFileError(f"{images_dir}: {len(missing)} annotated image(s) missing: {', '.join(missing[:5])}")
    return paths


def _evaluate(annotations_path: Path, results: dict) -> dict:
    try:
        from defr.eval.hicodet import evaluate_hicodet, load_annotations
    except ImportError as e:
        raise RuntimeError(f"HICO-DET evaluation (defr.eval.hicodet) is not available: {e}") from None
    return _jsonable(evaluate_hicodet(load_annotations(annotations_path), results, setting="default"))


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "tolist"):
        return _jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def box_noise_study(
    detector: HOIDetector,
    annotations_path: str | os.PathLike,
    images_dir: str | os.PathLike,
    ratios: Sequence[float] = (0.0, 0.05, 0.1, 0.2),
    seed: int = 0,
    batch_size: int = 8,
) -> list[dict]:
    """HICO-DET mAP with noisy GT boxes as detections, one row per noise ratio.

    Returns ``[{"ratio": r, "full": ..., "rare": ..., "non_rare": ..., "metrics": {all metrics}}]``.
    """
    data = read_annotation_file(annotations_path)
    paths = _image_paths(data, Path(images_dir))
    rows = []
    for r in ratios:
        results = run_detection(detector, paths, noisy_gt_detections(data, r, seed), batch_size=batch_size)
        metrics = _evaluate(Path(annotations_path), results)
        rows.append({"ratio": float(r), **{k: metrics.get(k) for k in METRICS}, "metrics": metrics})
    return rows


def plot_box_noise(rows: list[dict], path: str | os.PathLike) -> Path:
    """mAP (full / rare / non-rare) against the noise ratio → PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ratios = [row["ratio"] for row in rows]
    for key, style in zip(METRICS, ("o-", "s--", "^:"), strict=True):
        values = [row[key] if row[key] is not None else float("nan") for row in rows]
        ax.plot(ratios, values, style, label=key.replace("_", "-"))
    ax.set(xlabel="box noise ratio r", ylabel="mAP", title="HOI detection with noisy GT boxes")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    finally:
        plt.close(fig)
    return path


def run_detection_demo(checkpoint: Path, synth_root: Path, out_dir: Path, noise: float = 0.05, seed: int = 0) -> dict:
    """Detection stage of ``defr demo``: noisy synthetic GT boxes as the detector, HICO-DET metrics, pictures.

    synth_root holds ``instances_test2015.json`` and ``images/test2015/*.jpg``. Writes
    ``out_dir/detections.json`` (results format) and ``out_dir/detections_*.png`` (4 images).
    """
    from defr.runtime.draw import save_result_images

    out_dir = Path(out_dir)
    annotations = Path(synth_root) / "instances_test2015.json"
    data = read_annotation_file(annotations)
    paths = _image_paths(data, Path(synth_root) / "images" / "test2015")
    detector = HOIDetector.from_checkpoint(checkpoint)
    dets = noisy_gt_detections(data, noise, seed)
    results = run_detection(detector, paths, dets)
    detections = write_json(results, out_dir / "detections.json")
    metrics = _evaluate(annotations, results)

    shown = [p for p in paths if results[p.name]["hoi"]][:4]
    images = [read_image(p) for p in shown]
    drawn = detector.detect(images, [dets[p.name] for p in shown], names=[str(p) for p in shown])
    pictures = save_result_images(images, drawn, detector.meta.class_names, out_dir, names=[p.name for p in shown])
    return {
        "noise": noise,
        "images": len(paths),
        "triplets": sum(len(r["hoi"]) for r in results.values()),
        **{k: metrics.get(k) for k in METRICS},
        "metrics": metrics,
        "detections": str(detections),
        "pictures": [str(p) for p in pictures],
    }


def _ratios(ctx, param, value: str) -> list[float]:
    try:
        ratios = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None
    if not ratios or any(not math.isfinite(r) or r < 0 for r in ratios):
        raise click.BadParameter(f"ratios must be finite numbers >= 0, got {value!r}")
    return ratios


@click.command("box-noise")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--annotations", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--ratios", default="0,0.05,0.1,0.2", show_default=True, callback=_ratios)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="cpu", show_default=True)
def box_noise_command(checkpoint, annotations, images, ratios, out, seed, batch_size, device) -> None:
    """HICO-DET mAP with noisy ground-truth boxes as detections: box_noise.json and box_noise.png in OUT."""
    try:
        detector = HOIDetector.from_checkpoint(checkpoint, device=device)
        rows = box_noise_study(detector, annotations, images, ratios, seed=seed, batch_size=batch_size)
    except (ValueError, RuntimeError) as e:
        raise click.ClickException(str(e)) from None
    report = {"checkpoint": str(checkpoint), "annotations": str(annotations), "seed": seed, "rows": rows}
    write_json(report, Path(out) / "box_noise.json")
    plot_box_noise(rows, Path(out) / "box_noise.png")
    for row in rows:
        click.echo(f"r={row['ratio']:<5g} full {row['full']} rare {row['rare']} non-rare {row['non_rare']}")
