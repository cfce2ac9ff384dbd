"""``defr demo``: the whole pipeline on built-in synthetic data (the library is ``defr.demo``)."""

from __future__ import annotations

from pathlib import Path

import click

from defr.commands import one_line_errors
from defr.data.synth.settings import SETTINGS
from defr.demo import DemoConfig, run_demo
from defr.demo_report import summary


@click.command("demo")
@click.option(
    "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"), show_default=True
)
@click.option("--images", type=int, default=DemoConfig.images, show_default=True, help="Synthetic images.")
@click.option("--image-size", type=int, default=DemoConfig.image_size, show_default=True)
@click.option("--epochs", type=int, help="Training epochs (default 8 with --pretrained weights, 18 without).")
@click.option("--lr", type=float, help="Learning rate (default 1e-4 with --pretrained weights, 3e-4 without).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--pretrained",
    default=DemoConfig.pretrained,
    show_default=True,
    help="Packaged tiny-vit weights to fine-tune, or 'none' to train from random initialisation.",
)
@click.option("--skip-detection", is_flag=True, help="Stop after classification.")
@click.option("--skip-export", is_flag=True, help="Do not export to ONNX.")
@click.option("--skip-video", is_flag=True, help="Do not run the video stage.")
@click.option("--video-frames", type=int, default=DemoConfig.video_frames, show_default=True)
@click.option("--video-seeds", type=int, default=DemoConfig.video_seeds, show_default=True, help="Clips scored.")
@click.option("--setting", type=click.Choice(list(SETTINGS)), default=DemoConfig.setting, show_default=True,
              help="Synthetic scene setting of the images and the video.")  # fmt: skip
def demo_command(
    output: Path,
    images: int,
    image_size: int,
    epochs: int | None,
    lr: float | None,
    seed: int,
    pretrained: str,
    skip_detection: bool,
    skip_export: bool,
    skip_video: bool,
    video_frames: int,
    video_seeds: int,
    setting: str,
) -> None:
    """Synthesise a HOI set, train tiny-vit, evaluate, detect, export, run a video (CPU, no downloads)."""
    cfg = DemoConfig(
        output=output,
        images=images,
        image_size=image_size,
        epochs=epochs,
        lr=lr,
        seed=seed,
        pretrained=None if pretrained.lower() == "none" else pretrained,
        detection=not skip_detection,
        export=not skip_export,
        video=not skip_video,
        video_frames=video_frames,
        video_seeds=video_seeds,
        setting=setting,
    )
    with one_line_errors():
        report = run_demo(cfg)
    click.echo(summary(report))
    click.echo(f"report: {output / 'demo.json'}")
