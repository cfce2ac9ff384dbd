"""``defr synth``: the synthetic HOI data set (``defr.data.synth.generate_synthetic``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from defr.errors import DefrError


@click.command("synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--images", default=600, show_default=True, help="Images in all (about 25 % become the test split).")
@click.option("--seed", default=0, show_default=True, help="Random seed; the same seed writes identical files.")
@click.option("--size", default=128, show_default=True, help="Long image side in pixels.")
def synth_command(out: Path, images: int, seed: int, size: int) -> None:
    """Write a synthetic HOI data set in HICO / HICO-DET layout to OUT."""
    from defr.data.synth import CLASSES, generate_synthetic

    try:
        generate_synthetic(out, images=images, seed=seed, size=size)
    except (DefrError, OSError) as e:
        raise click.ClickException(str(e)) from e
    few = json.loads((out / "few_shot_classes.json").read_text())
    click.echo(
        f"wrote {images} images ({len(CLASSES)} classes; few@1/5/10: {len(few['few_1'])}/{len(few['few_5'])}/"
        f"{len(few['few_10'])} classes) to {out}"
    )
