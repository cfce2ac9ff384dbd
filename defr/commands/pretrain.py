"""``defr pretrain`` (the library is ``defr.pretrain``)."""

from __future__ import annotations

import shlex
import sys

import click

from defr.commands import one_line_errors
from defr.pretrain import PretrainConfig, pretrain


@click.command("pretrain")
@click.option("--output", type=click.Path(file_okay=False), default=PretrainConfig.output, show_default=True)
@click.option("--steps", type=int, default=PretrainConfig.steps, show_default=True)
@click.option("--batch-size", type=int, default=PretrainConfig.batch_size, show_default=True)
@click.option("--image-size", type=int, default=PretrainConfig.image_size, show_default=True)
@click.option("--lr", type=float, default=PretrainConfig.lr, show_default=True)
@click.option("--log-every", type=int, default=PretrainConfig.log_every, show_default=True)
@click.option("--eval-images", type=int, default=PretrainConfig.eval_images, show_default=True)
@click.option("--text-encoder", default=PretrainConfig.text_encoder, show_default=True)
@click.option("--workers", type=int, default=PretrainConfig.workers, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last saved step.")
def pretrain_command(resume: bool, **options) -> None:
    """Contrastive vision–language pretraining of tiny-vit on synthetic captioned scenes (defr-synth).

    Writes OUTPUT/tiny-vit-defr-synth.safetensors and its sidecar .json, pretrain_log.jsonl, and a
    resumable pretrain_state.pt every --log-every steps. SIGTERM stops it as Ctrl-C does.
    """
    command = shlex.join(["defr", *sys.argv[1:]])
    with one_line_errors():
        path = pretrain(PretrainConfig(**options), resume=resume, command=command)
    click.echo(f"weights: {path}")
