"""``defr evaluate`` (HICO classification protocol) and ``defr eval-hicodet`` (official HICO-DET protocol)."""

from __future__ import annotations

from pathlib import Path

import click

from defr.commands import one_line_errors
from defr.data import DATASETS, SPLITS, build_dataset
from defr.data.hicodet import load_annotations
from defr.eval.classification import evaluate_model, zero_shot_setup
from defr.eval.hicodet import SETTINGS, SUMMARY_KEYS, evaluate_hicodet, load_results
from defr.files import OutputSet, write_json
from defr.model import load_model


def percent(fraction: float | None) -> str:
    """An AP fraction as a 6-wide percentage (``n/a`` for None)."""
    return f"{'n/a':>6}" if fraction is None else f"{100 * fraction:6.2f}"


@click.command("evaluate")
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Our .safetensors checkpoint or the released DEFR .pth (not with --zero-shot).",
)
@click.option(
    "--zero-shot",
    is_flag=True,
    help="No checkpoint: score every class by its text embedding alone, on --backbone / --pretrained weights.",
)
@click.option("--backbone", help="With --zero-shot: the backbone (tiny-vit, ViT-B-16, ...).")
@click.option("--pretrained", help="With --zero-shot: its language-aligned weights (defr-synth, openai, a file).")
@click.option("--text-encoder", default="minilm", show_default=True, help="With --zero-shot: the text encoder.")
@click.option("--image-size", type=click.IntRange(min=16), help="With --zero-shot: input size (default: the weights').")
@click.option("--dataset", "dataset_name", required=True, type=click.Choice(DATASETS))
@click.option("--data-root", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="DataLoader workers.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the metrics here.")
def evaluate_command(
    checkpoint: Path | None,
    zero_shot: bool,
    backbone: str | None,
    pretrained: str | None,
    text_encoder: str,
    image_size: int | None,
    dataset_name: str,
    data_root: Path,
    split: str,
    batch_size: int,
    device: str,
    workers: int,
    json_out: Path | None,
) -> None:
    """HICO classification metrics (mAP, Few@1/5/10, known-object mAP) of a checkpoint on a dataset split.

    With --zero-shot, of language-aligned pretrained weights and no DEFR training at all: the classifier is
    the classes' text embeddings through the weights' projection (the fine-tuning's starting point).
    """
    inputs = [checkpoint] if checkpoint is not None else []
    with one_line_errors(), OutputSet({"--json": json_out}, inputs=inputs) as staged:
        if zero_shot:
            check_zero_shot_options(checkpoint, backbone, pretrained)
            model, dataset = zero_shot_setup(
                backbone, pretrained, text_encoder, dataset_name, data_root, split, image_size
            )
            name = f"zero-shot {backbone} --pretrained {pretrained} ({text_encoder})"
        else:
            if checkpoint is None:
                raise click.UsageError("give --checkpoint, or --zero-shot with --backbone and --pretrained")
            model = load_model(checkpoint)
            spec = model.cfg.backbone
            dataset = build_dataset(dataset_name, data_root, split, spec.image_size, spec.mean, spec.std)
            name = checkpoint.name
        metrics = evaluate_model(model, dataset, batch_size=batch_size, device=device, num_workers=workers)
        click.echo(f"{name} on {dataset_name} {split} ({len(dataset)} images), AP in %:")
        for key in ("mAP", "few@1", "few@5", "few@10", "ko_mAP"):
            click.echo(f"  {key:<7} {percent(metrics[key])}")
        click.echo(f"  classes evaluated: {metrics['num_classes_evaluated']} of {len(dataset.class_names)}")
        if json_out is not None:
            model_source = (
                {"zero_shot": {"backbone": backbone, "pretrained": pretrained, "text_encoder": text_encoder}}
                if zero_shot
                else {"checkpoint": str(checkpoint)}
            )
            source = {**model_source, "dataset": dataset_name, "data_root": str(data_root)}
            write_json({**source, "split": split, **metrics}, staged["--json"])


def check_zero_shot_options(checkpoint: Path | None, backbone: str | None, pretrained: str | None) -> None:
    if checkpoint is not None:
        raise click.UsageError("--zero-shot scores pretrained weights without a checkpoint: drop --checkpoint")
    if not backbone or not pretrained:
        raise click.UsageError("--zero-shot needs --backbone and --pretrained (e.g. tiny-vit, defr-synth)")


@click.command("eval-hicodet")
@click.option(
    "--annotations",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="instances_test2015.json or the official anno_bbox.mat.",
)
@click.option(
    "--results",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON {filename: {boxes_h, boxes_o, hoi, scores}}, boxes in 0-based pixels (what `defr detect` writes).",
)
@click.option("--setting", type=click.Choice(SETTINGS), default="default", show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the metrics here.")
@click.option("--allow-empty", is_flag=True, help="Evaluate a results file without any detection (mAP 0).")
def eval_hicodet_command(
    annotations: Path, results: Path, setting: str, json_out: Path | None, allow_empty: bool
) -> None:
    """HICO-DET mAP (full / rare / non-rare) of a results file, official protocol."""
    with one_line_errors(), OutputSet({"--json": json_out}, inputs=[annotations, results]) as staged:
        ann = load_annotations(annotations)
        metrics = evaluate_hicodet(ann, load_results(results, ann, allow_empty), setting)
        click.echo(f"HICO-DET, {setting} setting: {ann.num_classes} classes, {sum(metrics['num_gt'])} GT pairs")
        for key in SUMMARY_KEYS:
            click.echo(f"  {key.replace('_', '-'):<9} mAP {percent(metrics[key])}")
        if metrics["classes_without_gt"]:
            missing = metrics["classes_without_gt"]
            click.echo(f"  {len(missing)} class(es) without GT pairs, left out of the means: {missing[:10]}")
        if json_out is not None:
            write_json(metrics, staged["--json"])
