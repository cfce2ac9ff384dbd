"""``defr train`` (the library is ``defr.train``)."""

from __future__ import annotations

from pathlib import Path

import click

from defr.clikit import OutputFolder
from defr.commands import one_line_errors
from defr.commands.options import SEED, DeviceType, FiniteFloat
from defr.data import DATASETS
from defr.files import OutputSet
from defr.losses import LOSSES
from defr.model.factory import INITS
from defr.train import (
    CHECKPOINT,
    MAX_EPOCHS,
    MAX_WORKERS,
    METRICS_FILE,
    TRAIN_STATE,
    TrainConfig,
    distributed_rank,
    load_config,
    resume_config,
    train,
)


@click.command("train")
@click.option("--config", "config_path", help="YAML file or packaged preset (e.g. table4/clip-language-lse).")
@click.option("--dataset", type=click.Choice(DATASETS))
@click.option("--data-root", type=click.Path(file_okay=False))
@click.option("--backbone", help="tiny-vit, an open_clip ViT (ViT-B-16) or timm/<name>.")
@click.option("--pretrained", help="Pretrained tag (needs network) or local weights file.")
@click.option("--init", type=click.Choice(INITS))
@click.option("--text-encoder", help="minilm, clip:<model>[:<tag>], hf:<repo> or a local model directory.")
@click.option("--loss", type=click.Choice(sorted(LOSSES)))
@click.option("--logit-scale", type=float, help="γ of the cosine logits (default 100; the CLIP head: exp(4.61)).")
@click.option("--epochs", type=click.IntRange(1, MAX_EPOCHS))
@click.option("--batch-size", type=int)
@click.option("--accumulate", type=int, help="Micro-batches per optimizer step (gradient accumulation).")
@click.option("--image-size", type=int)
@click.option(
    "--lr",
    type=FiniteFloat(0, min_open=True),
    help="Base learning rate (default 1.5e-5 for CLIP backbones, 1e-4 otherwise).",
)
@click.option("--seed", type=SEED)
@click.option("--workers", type=click.IntRange(0, MAX_WORKERS), help="DataLoader worker processes.")
@click.option("--device", type=DeviceType(allow_auto=True), help="auto, cpu, cuda or cuda:N.")
@click.option("--output", type=OutputFolder())
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last epoch.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the run in --output (its train_state.pt, model.safetensors, metrics.jsonl; nothing else).",
)
def train_command(config_path: str | None, resume: bool, overwrite: bool, **options) -> None:
    """Train DEFR (single process, or multi-GPU / multi-node under torchrun).

    SIGTERM stops a run as Ctrl-C does: the files of the last finished epoch stay, resumable.
    """
    overrides = {k: v for k, v in options.items() if v is not None}
    with one_line_errors():
        if resume:  # the run's recorded settings, then what is given (train refuses what a resume may not change)
            cfg = resume_config(overrides.pop("output", TrainConfig.output), config_path, overrides)
        else:
            cfg = load_config(config_path, overrides) if config_path else TrainConfig(**overrides)
        # train claims the run folder on the seam while it writes (defr.train.run_folder.claim_output); here, before
        # any work, the seam refuses a file of the run that is an input (the config, local pretrained weights)
        # or not a regular file (a device, a FIFO): the run writes those files in place, epoch by epoch
        run_files = {name: Path(cfg.output) / name for name in (CHECKPOINT, TRAIN_STATE, METRICS_FILE)}
        OutputSet(run_files, inputs=[config_path, cfg.pretrained])  # names that are not files are no inputs
        path = train(cfg, resume=resume, overwrite=overwrite)
    if distributed_rank() == 0:
        click.echo(f"checkpoint: {path}")
