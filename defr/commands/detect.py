"""``defr detect`` (images + detections → results file) and ``defr box-noise`` (mAP against box noise)."""

from __future__ import annotations

from pathlib import Path

import click

from defr.clikit import OutputFolder
from defr.commands import one_line_errors
from defr.commands.options import (
    ATTENTION_OPTION,
    DEVICE_OPTION,
    MASK_MODE_OPTION,
    MODEL_OPTIONS,
    RAY_OPTION,
    SEED,
    model_inputs,
    model_request,
)
from defr.detections import DEFAULT_LABEL_SPACE, LABEL_SPACES
from defr.eval.box_noise import box_noise_study, plot_box_noise
from defr.eval.gt_detections import MAX_NOISE_RATIO
from defr.files import OutputSet, write_json
from defr.runtime import HOIDetector, load_detector
from defr.runtime.detect import run_detection
from defr.runtime.io import list_images, load_detections


@click.command("detect")
@MODEL_OPTIONS
@click.option("--images", required=True, type=click.Path(exists=True, path_type=Path), help="Folder or list file.")
@click.option(
    "--detections",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Folder of per-image JSON files, or one JSONL file with a 'filename' key per line.",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Results JSON to write.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@DEVICE_OPTION
@click.option("--label-space", default=DEFAULT_LABEL_SPACE, show_default=True, type=click.Choice(LABEL_SPACES))
@click.option("--top-k", default=None, type=click.IntRange(min=1), help="Keep at most N triplets per image.")
@ATTENTION_OPTION
@RAY_OPTION
@click.option("--concurrency", default=2, show_default=True, type=click.IntRange(min=1), help="--ray: detector actors.")
def detect_command(
    checkpoint,
    model_file,
    images,
    detections,
    out,
    batch_size,
    device,
    precision,
    label_space,
    top_k,
    mask_mode,
    attention,
    ray_address,
    concurrency,
    runtime,
) -> None:
    """Detect human-object interactions from object detections; write a results JSON.

    Every image needs detections (an entry with empty lists if there are none); images with no
    person detected get an empty result.
    """
    with one_line_errors():
        model, options = model_request(
            checkpoint, model_file, runtime, precision, mask_mode, device=device, attention=attention
        )
        paths = list_images(images)
        per_image = [detections / f"{p.stem}.json" for p in paths] if detections.is_dir() else []
        inputs = [images, *paths, detections, *per_image, *model_inputs(model)]
        with OutputSet({"--out": out}, inputs=inputs) as staged:  # refused before any work; a second writer too
            dets = load_detections(detections, [p.name for p in paths], label_space)
            load = {"options": options, "top_k": top_k}
            if ray_address is None:
                results = run_detection(load_detector(model, **load), paths, dets, batch_size=batch_size)
            else:
                from defr.serve.batch import detect_images_ray  # imports Ray: only for --ray
                from defr.serve.connect import ray_session

                with ray_session(ray_address):
                    gpus = 1 if device.startswith("cuda") else 0
                    results = detect_images_ray(model, paths, dets, load, batch_size, concurrency, gpus)
            write_json(results, staged["--out"])
    triplets = sum(len(r["hoi"]) for r in results.values())
    click.echo(f"wrote {out}: {len(results)} images, {triplets} HOI detections")


def _ratios(ctx, param, value: str) -> list[float]:
    try:
        ratios = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None
    if not ratios or any(not 0 <= r <= MAX_NOISE_RATIO for r in ratios):  # also nan
        raise click.BadParameter(f"ratios must be numbers in [0, {MAX_NOISE_RATIO:g}], got {value!r}")
    return ratios


@click.command("box-noise")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--annotations", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--ratios", default="0,0.05,0.1,0.2", show_default=True, callback=_ratios)
@click.option("--out", required=True, type=OutputFolder(path_type=Path), help="Output folder.")
@click.option(
    "--overwrite", is_flag=True, help="Replace box_noise.json / box_noise.png in OUT that defr did not write."
)
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@DEVICE_OPTION
@MASK_MODE_OPTION
def box_noise_command(
    checkpoint, annotations, images, ratios, out, overwrite, seed, batch_size, device, mask_mode
) -> None:
    """HICO-DET mAP with noisy ground-truth boxes as detections: box_noise.json and box_noise.png in OUT
    (one set: both or neither are replaced)."""
    with one_line_errors():
        names = {"box_noise.json": out / "box_noise.json", "box_noise.png": out / "box_noise.png"}
        written = OutputSet(names, inputs=[checkpoint, annotations], defaults=names, overwrite=overwrite)
        with written as staged:
            rows = _box_noise(checkpoint, annotations, images, ratios, seed, batch_size, device, mask_mode)
            write_json(rows, staged["box_noise.json"])
            plot_box_noise(rows["rows"], staged["box_noise.png"])
    for row in rows["rows"]:
        click.echo(f"r={row['ratio']:<5g} full {row['full']} rare {row['rare']} non-rare {row['non_rare']}")


def _box_noise(checkpoint, annotations, images, ratios, seed, batch_size, device, mask_mode) -> dict:
    """The box-noise report: the study's rows and what produced them."""
    detector = HOIDetector.from_checkpoint(checkpoint, device=device, mask_mode=mask_mode)
    rows = box_noise_study(detector, annotations, images, ratios, seed=seed, batch_size=batch_size)
    return {
        "checkpoint": str(checkpoint),
        "annotations": str(annotations),
        "seed": seed,
        "mask_mode": detector.backend.mask_mode,
        "rows": rows,
    }
