"""Training: AdamW (no weight decay), cosine schedule with warm restarts, oversampling, DDP.

Determinism: the data order and the augmentation randomness of an epoch depend only on
(seed, epoch, rank), and a checkpoint is written at every epoch end, so ``--resume`` continues
bit-for-bit on a CPU.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path

import click
import numpy as np
import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm

from defr.errors import ConfigError
from defr.files import atomic_path
from defr.losses import LOSSES
from defr.model import DEFR, load_checkpoint, save_checkpoint

CHECKPOINT = "model.safetensors"
TRAIN_STATE = "train_state.pt"
METRICS = "metrics.jsonl"


@dataclass
class TrainConfig:
    dataset: str = "synth"
    data_root: str = "demo-output/data"
    backbone: str = "tiny-vit"
    pretrained: str | None = None
    init: str = "language"
    text_encoder: str = "minilm"
    templates: list[str] = field(default_factory=lambda: ["{}"])
    loss: str = "lse-sign"
    logit_scale: float | None = None  # γ; None: 100 (the paper), exp(4.61) for the CLIP head
    epochs: int = 10
    batch_size: int = 32
    accumulate: int = 1  # micro-batches per optimizer step
    image_size: int = 672
    lr: float | None = None  # None: 1.5e-5 for CLIP backbones, 1e-4 otherwise
    restart_every: int = 5  # epochs between warm restarts of the cosine schedule
    min_positives: int = 40  # oversample so every class has at least this many positives per epoch
    val_fraction: float = 0.1
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    output: str = "runs/defr"

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {sorted(LOSSES)}, not {self.loss!r}")
        if self.init not in ("language", "random"):
            raise ConfigError(f"init must be 'language' or 'random', not {self.init!r}")
        for name in ("epochs", "batch_size", "accumulate", "image_size", "restart_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.logit_scale is not None and not self.logit_scale > 0:
            raise ConfigError(f"logit_scale must be > 0, got {self.logit_scale}")

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1.5e-5 if is_clip_backbone(self.backbone) else 1e-4


def is_clip_backbone(name: str) -> bool:
    return name.startswith("ViT-") or name.startswith("clip")


def load_config(path_or_preset: str, overrides: dict) -> TrainConfig:
    """A YAML file, or a packaged preset by name (``table4/clip-language-lse``), then ``overrides``."""
    path = Path(path_or_preset)
    if path.is_file():
        text = path.read_text()
    else:
        preset = resources.files("defr.configs").joinpath(f"{path_or_preset}.yaml")
        if not preset.is_file():
            raise click.ClickException(f"config {path_or_preset!r}: no such file or packaged preset")
        text = preset.read_text()
    values = yaml.safe_load(text) or {}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise click.ClickException(f"config {path_or_preset!r}: unknown keys {unknown}")
    return TrainConfig(**{**values, **overrides})


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Distributed:
    """Join the ``torchrun`` process group when launched by it (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str, ddp_local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{ddp_local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_indices(targets: np.ndarray, epoch: int, cfg: TrainConfig, ddp: Distributed) -> list[int]:
    """This rank's sample order for ``epoch``: oversampled, shuffled by (seed, epoch), sharded evenly."""
    from defr.data import oversampling_indices

    order = np.asarray(oversampling_indices(targets, cfg.min_positives, seed=cfg.seed), dtype=np.int64)
    order = order[np.random.default_rng([cfg.seed, epoch]).permutation(len(order))]
    per_rank = math.ceil(len(order) / ddp.world)
    order = np.resize(order, per_rank * ddp.world)  # pad by wrapping so every rank steps equally
    return order[ddp.rank :: ddp.world].tolist()


def make_loss(cfg: TrainConfig, targets: np.ndarray):
    """(logits [B, C], targets [B, C]) → scalar, for the configured loss."""
    loss_fn = LOSSES[cfg.loss]
    if cfg.loss != "weighted-bce":
        return loss_fn
    pos = targets.sum(axis=0)
    pos_weight = torch.tensor(np.where(pos > 0, (len(targets) - pos) / np.maximum(pos, 1), 1.0), dtype=torch.float32)
    return lambda logits, t: loss_fn(logits, t, pos_weight.to(logits.device))


def build_training_model(cfg: TrainConfig, class_names: list[str]) -> DEFR:
    from defr.model.factory import build_model

    return build_model(
        cfg.backbone,
        class_names,
        image_size=cfg.image_size,
        pretrained=cfg.pretrained,
        init=cfg.init,
        text_encoder=cfg.text_encoder if cfg.init == "language" else None,
        templates=tuple(cfg.templates),
        logit_scale=cfg.logit_scale,
    )


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train a DEFR model; returns the path of the final checkpoint (``OUTPUT/model.safetensors``)."""
    from defr.data import build_dataset

    seed_everything(cfg.seed)
    ddp = init_distributed(
        torch.device("cuda") if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else torch.device("cpu")
    )
    device = pick_device(cfg.device, ddp.local_rank)
    out = Path(cfg.output)
    if ddp.main:
        out.mkdir(parents=True, exist_ok=True)

    if resume:
        model, start_epoch, state = _resume(out, cfg)
    else:
        probe = build_dataset(
            cfg.dataset, cfg.data_root, "train", 32, (0, 0, 0), (1, 1, 1), val_fraction=cfg.val_fraction, seed=cfg.seed
        )
        model, start_epoch, state = build_training_model(cfg, probe.class_names), 0, None
    spec = model.cfg.backbone
    split = dict(val_fraction=cfg.val_fraction, seed=cfg.seed)
    train_set = build_dataset(cfg.dataset, cfg.data_root, "train", spec.image_size, spec.mean, spec.std, True, **split)
    val_set = build_dataset(cfg.dataset, cfg.data_root, "val", spec.image_size, spec.mean, spec.std, False, **split)
    if train_set.class_names != model.cfg.class_names:
        raise click.ClickException(f"{cfg.data_root}: dataset classes differ from the model's (resuming another run?)")
    targets = (train_set.labels == 1).astype(np.float32)

    model.to(device).train()
    net = torch.nn.parallel.DistributedDataParallel(model) if ddp.world > 1 else model
    optimizer = torch.optim.AdamW(
        (p for p in model.parameters() if p.requires_grad), lr=cfg.learning_rate, weight_decay=0.0
    )
    steps_per_epoch = math.ceil(len(epoch_indices(targets, 0, cfg, ddp)) / (cfg.batch_size * cfg.accumulate))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=cfg.restart_every * steps_per_epoch)
    amp_dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp_dtype == torch.float16)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
    loss_fn = make_loss(cfg, targets)

    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(cfg.seed * 100_003 + epoch * 101 + ddp.rank)  # augmentation randomness of this epoch
        started = time.time()
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(train_set, epoch_indices(targets, epoch, cfg, ddp)),
            batch_size=cfg.batch_size,
            num_workers=cfg.workers,
            generator=torch.Generator().manual_seed(cfg.seed + epoch),
        )
        train_loss = _train_epoch(
            net, loader, loss_fn, optimizer, scheduler, scaler, amp_dtype, cfg, device, ddp, epoch
        )
        if ddp.main:
            record = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "lr": scheduler.get_last_lr()[0],
                "seconds": round(time.time() - started, 2),
            }
            if len(val_set):
                record.update({f"val_{k}": v for k, v in _validate(model, val_set, device).items()})
            model.cfg.init = {**model.cfg.init, "train": asdict(cfg)}
            _write_epoch(out, model, optimizer, scheduler, scaler, epoch + 1, record)
            tqdm.write(json.dumps(record))
        if ddp.world > 1:
            dist.barrier()
    if ddp.world > 1:
        dist.destroy_process_group()
    return out / CHECKPOINT


def _train_epoch(net, loader, loss_fn, optimizer, scheduler, scaler, amp_dtype, cfg, device, ddp, epoch) -> float:
    net.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not ddp.main, leave=False)
    for i, (images, targets) in enumerate(bar):
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        last_micro = (i + 1) % cfg.accumulate == 0 or i + 1 == len(loader)
        sync = nullcontext() if last_micro or ddp.world == 1 else net.no_sync()
        with sync, torch.autocast(device.type, dtype=amp_dtype, enabled=device.type == "cuda"):
            loss = loss_fn(net(images).float(), targets)
            scaler.scale(loss / cfg.accumulate).backward()
        if last_micro:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
        total += loss.item() * len(images)
        count += len(images)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return total / max(count, 1)


@torch.no_grad()
def _validate(model: DEFR, dataset, device: torch.device) -> dict:
    from defr.eval.classification import evaluate_model

    metrics = evaluate_model(model, dataset, device=device)
    model.train()
    return {k: metrics[k] for k in ("mAP", "few@1", "few@5", "few@10") if k in metrics}


def _write_epoch(out: Path, model, optimizer, scheduler, scaler, epoch: int, record: dict) -> None:
    save_checkpoint(model, out / CHECKPOINT, metadata={"epoch": epoch})
    state = {
        "epoch": epoch,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
    }
    with atomic_path(out / TRAIN_STATE) as tmp:
        torch.save(state, tmp)
    with open(out / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")


def _resume(out: Path, cfg: TrainConfig) -> tuple[DEFR, int, dict]:
    ckpt, state_path = out / CHECKPOINT, out / TRAIN_STATE
    if not (ckpt.is_file() and state_path.is_file()):
        raise click.ClickException(f"--resume: {out} has no {CHECKPOINT} and {TRAIN_STATE} to resume from")
    model = load_checkpoint(ckpt)
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    _truncate_metrics(out / METRICS, state["epoch"])
    return model, state["epoch"], state


def _truncate_metrics(path: Path, epochs: int) -> None:
    """Drop metric lines of epochs after the last checkpoint (a run killed mid-write)."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        path.write_text("".join(line + "\n" for line in lines if json.loads(line)["epoch"] <= epochs))


@click.command("train")
@click.option("--config", "config_path", help="YAML file or packaged preset (e.g. table4/clip-language-lse).")
@click.option("--dataset", type=click.Choice(["hico", "jsonl", "synth"]))
@click.option("--data-root", type=click.Path(file_okay=False))
@click.option("--backbone", help="tiny-vit, an open_clip ViT (ViT-B-16) or timm/<name>.")
@click.option("--pretrained", help="Pretrained tag (needs network) or local weights file.")
@click.option("--init", type=click.Choice(["language", "random"]))
@click.option("--text-encoder", help="minilm, clip:<model>[:<tag>], hf:<repo> or a local model directory.")
@click.option("--loss", type=click.Choice(sorted(LOSSES)))
@click.option("--logit-scale", type=float, help="γ of the cosine logits (default 100; the CLIP head: exp(4.61)).")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--accumulate", type=int, help="Micro-batches per optimizer step (gradient accumulation).")
@click.option("--image-size", type=int)
@click.option("--lr", type=float, help="Base learning rate (default 1.5e-5 for CLIP backbones, 1e-4 otherwise).")
@click.option("--seed", type=int)
@click.option("--workers", type=int, help="DataLoader worker processes.")
@click.option("--device", help="auto, cpu, cuda or cuda:N.")
@click.option("--output", type=click.Path(file_okay=False))
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last epoch.")
def train_command(config_path: str | None, resume: bool, **options) -> None:
    """Train DEFR (single process, or multi-GPU / multi-node under torchrun)."""
    overrides = {k: v for k, v in options.items() if v is not None}
    try:
        cfg = load_config(config_path, overrides) if config_path else TrainConfig(**overrides)
        path = train(cfg, resume=resume)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise click.ClickException(str(e)) from None
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"checkpoint: {path}")
