"""``defr detect``: images + object detections → HOI results file (the Python API is ``run_detection``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import click
from tqdm import tqdm

from defr.errors import ConfigError
from defr.files import write_json
from defr.runtime.detector import BackendError, HOIDetector, load_detector
from defr.runtime.io import list_images, load_detections, read_image
from defr.runtime.pairs import LABEL_SPACES


def run_detection(
    detector: HOIDetector,
    image_paths: Sequence[str | os.PathLike],
    detections: dict[str, dict],
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, dict]:
    """Detect HOIs in ``image_paths`` in batches → results format ``{filename: entry}``.

    detections: ``{filename: {"boxes", "labels" (HICO), "scores"}}`` with an entry per image.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, not {batch_size}")
    paths = [Path(p) for p in image_paths]
    results: dict[str, dict] = {}
    with tqdm(total=len(paths), desc="detect", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            names = [p.name for p in chunk]
            images = [read_image(p) for p in chunk]
            out = detector.detect(images, [detections[n] for n in names], names=[str(p) for p in chunk])
            results.update({n: r.to_json() for n, r in zip(names, out, strict=True)})
            bar.update(len(chunk))
    return results


@click.command("detect")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), help="DEFR checkpoint (ours or .pth).")
@click.option(
    "--model",
    "model_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Alternative to --checkpoint: an exported model.onnx or model.engine.",
)
@click.option("--images", required=True, type=click.Path(exists=True, path_type=Path), help="Folder or list file.")
@click.option(
    "--detections",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Folder of per-image JSON files, or one JSONL file with a 'filename' key per line.",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Results JSON to write.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="cpu", show_default=True)
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(["fp32", "fp16", "bf16"]))
@click.option("--label-space", default="hico", show_default=True, type=click.Choice(LABEL_SPACES))
@click.option("--top-k", default=None, type=click.IntRange(min=1), help="Keep at most N triplets per image.")
def detect_command(
    checkpoint, model_file, images, detections, out, batch_size, device, precision, label_space, top_k
) -> None:
    """Detect human-object interactions from object detections; write a results JSON.

    Every image needs detections (an entry with empty lists if there are none); images with no
    person detected get an empty result.
    """
    if (checkpoint is None) == (model_file is None):
        raise click.UsageError("give exactly one of --checkpoint and --model")
    if model_file is not None and precision != "fp32":
        raise click.UsageError("--precision applies to --checkpoint; an exported model keeps its own precision")
    try:
        paths = list_images(images)
        dets = load_detections(detections, [p.name for p in paths], label_space)
        kw = {"precision": precision} if checkpoint is not None else {}
        detector = load_detector(checkpoint or model_file, device=device, top_k=top_k, **kw)
        results = run_detection(detector, paths, dets, batch_size=batch_size)
    except (ValueError, BackendError) as e:  # input errors name the file; BackendError: a runtime is missing
        raise click.ClickException(str(e)) from None
    write_json(results, out)
    triplets = sum(len(r["hoi"]) for r in results.values())
    click.echo(f"wrote {out}: {len(results)} images, {triplets} HOI detections")
