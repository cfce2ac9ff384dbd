"""``defr synth``: the synthetic HOI data set (``defr.data.synth.generate_synthetic``) or a synthetic video."""

from __future__ import annotations

from pathlib import Path

import click

from defr.clikit import OutputFolder
from defr.commands import one_line_errors
from defr.commands.options import MAX_FRAMES, MAX_SIZE, MIN_SIZE, SEED, FiniteFloat
from defr.data.synth import CLASSES, generate_synthetic, generate_synthetic_video
from defr.data.synth.settings import SETTINGS
from defr.jsonio import read_json


@click.command("synth")
@click.argument("out", required=False, type=OutputFolder(path_type=Path))
@click.option("--images", default=600, show_default=True, help="Images in all (about 25 % become the test split).")
@click.option(
    "--seed", default=0, show_default=True, type=SEED, help="Random seed; the same seed writes identical files."
)
@click.option(
    "--size",
    type=click.IntRange(MIN_SIZE, MAX_SIZE),
    help="Long image side in pixels [128]; with --video the frame width [256].",
)
@click.option(
    "--video",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a synthetic video (OUT.mp4) with OUT.detections.jsonl and OUT.events.jsonl beside it instead.",
)
@click.option("--frames", default=150, show_default=True, type=click.IntRange(1, MAX_FRAMES), help="Video frames.")
@click.option("--fps", default=15.0, show_default=True, type=FiniteFloat(1, 240), help="Video frame rate.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Write into a non-empty OUT that is not an earlier synthetic set: only the set's own entries "
    "(images/, anno.mat, the instances and few-shot JSON files) are replaced, everything else is kept. "
    "With --video: replace OUT.detections.jsonl / OUT.events.jsonl that defr did not write.",
)
@click.option(
    "--setting",
    type=click.Choice(list(SETTINGS)),
    default="default",
    show_default=True,
    help="crowded: 1-4 people side by side, neighbours often with the same kind of object; "
    "with --video three overlapping lanes, so neighbours pass close to and in front of each other.",
)
def synth_command(
    out: Path | None,
    images: int,
    seed: int,
    size: int | None,
    video: Path | None,
    frames: int,
    fps: float,
    overwrite: bool,
    setting: str,
) -> None:
    """Write a synthetic HOI data set in HICO / HICO-DET layout to OUT, or a synthetic video (--video).

    OUT may be missing, empty or an earlier synthetic set (replaced); synth never removes files it did
    not write.
    """
    if (out is None) == (video is None):
        raise click.UsageError("give OUT (a data set folder) or --video OUT.mp4, not both")
    with one_line_errors():
        if video is not None:
            files = generate_synthetic_video(
                video, frames=frames, fps=fps, width=size or 256, seed=seed, setting=setting, overwrite=overwrite
            )
            events = len(files.events.read_text().splitlines())
            click.echo(
                f"wrote {video} ({frames} frames at {fps:g} fps), {files.detections}, {files.events} ({events} events)"
            )
            return
        generate_synthetic(out, images=images, seed=seed, size=size or 128, overwrite=overwrite, setting=setting)
        few = read_json(out / "few_shot_classes.json")
    click.echo(
        f"wrote {images} images ({len(CLASSES)} classes; few@1/5/10: {len(few['few_1'])}/{len(few['few_5'])}/"
        f"{len(few['few_10'])} classes) to {out}"
    )
