"""Training: AdamW (no weight decay), cosine schedule with warm restarts, oversampling, DDP.

Determinism: the data order and the augmentation randomness of an epoch depend only on
(seed, epoch, rank), and a checkpoint is written at every epoch end, so ``--resume`` continues
bit-for-bit on a CPU.

The run folder (its files, their write order, its claim, ``--resume``): ``defr.train.run_folder``; the settings:
``defr.train.config``.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import uuid
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from defr.data import build_dataset, oversampling_indices
from defr.data.hico import DatasetError
from defr.errors import ConfigError
from defr.eval.classification import evaluate_model
from defr.losses import LOSSES
from defr.model import DEFR, build_model
from defr.train.config import TrainConfig
from defr.train.run_folder import (
    CHECKPOINT,
    RUN_FILES,
    TRAIN_STATE,
    check_fresh_output,
    check_resumable,
    hold_output,
    load_optimizer_state,
    make_state,
    metric_history,
    resume_run,
    write_epoch,
)


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def distributed_env() -> Distributed:
    """This process's place from ``torchrun``'s variables (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), checked
    before anything runs: ConfigError naming the variable and its value for one that is not a whole number,
    a ``RANK`` outside [0, WORLD_SIZE), or a ``WORLD_SIZE`` > 1 without ``RANK``."""
    env = {}
    for name, default in (("WORLD_SIZE", "1"), ("RANK", None), ("LOCAL_RANK", "0")):
        text = os.environ.get(name, default)
        if text is not None and not (text.strip().isascii() and text.strip().isdigit()):
            raise ConfigError(f"environment variable {name}={text!r} is not a whole number >= 0")
        env[name] = None if text is None else int(text)
    world, rank = env["WORLD_SIZE"], env["RANK"]
    if world < 1:
        raise ConfigError(f"environment variable WORLD_SIZE={world} must be >= 1")
    if world > 1 and rank is None:
        raise ConfigError(f"WORLD_SIZE={world} without RANK: launch multi-process runs with torchrun")
    rank = rank or 0
    if rank >= world:
        raise ConfigError(f"environment variable RANK={rank} must be below WORLD_SIZE={world}")
    return Distributed(rank, world, env["LOCAL_RANK"])


def distributed_rank() -> int:
    """This process's rank (0 outside ``torchrun``); ConfigError as ``distributed_env``."""
    return distributed_env().rank


def init_distributed(device: torch.device) -> Distributed:
    """Join the ``torchrun`` process group when launched by it (NCCL on CUDA, gloo on CPU)."""
    env = distributed_env()
    if env.world == 1:
        return Distributed()
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), env.world, env.local_rank)


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


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Train a DEFR model; returns the path of the final checkpoint (``OUTPUT/model.safetensors``).

    resume: continue the run in ``cfg.output`` from its last completed epoch. overwrite: replace
    the run in ``cfg.output`` (module docstring). Raises ``DatasetError`` / ``ConfigError`` for bad
    data or settings (before anything is written), ``ConfigError`` when the run folder cannot be
    continued, ``OutputRefused`` for an output that holds a run (neither flag), that another
    process is writing, or that cannot be written (a full disk).
    """
    if resume and overwrite:
        raise ConfigError("give --resume (continue the run) or --overwrite (replace it), not both")
    seed_everything(cfg.seed)
    ddp = init_distributed(
        torch.device("cuda") if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else torch.device("cpu")
    )
    out = Path(cfg.output)
    if ddp.main and not resume:
        check_fresh_output(out, overwrite)  # refused at once, before anything is built
    with ExitStack() as held:
        return _train(cfg, ddp, out, resume, overwrite, held)


def _train(cfg: TrainConfig, ddp: Distributed, out: Path, resume: bool, overwrite: bool, held: ExitStack) -> Path:
    device = pick_device(cfg.device, ddp.local_rank)
    split = dict(val_fraction=cfg.val_fraction, seed=cfg.seed)
    if resume:
        check_resumable(out)
        hold_output(held, out, ddp.main, resume, overwrite)  # ``resume_run`` repairs files: under the claim
        model, start_epoch, state = resume_run(out, cfg)
        history = metric_history(state)
    else:
        probe = build_dataset(cfg.dataset, cfg.data_root, "train", 32, (0, 0, 0), (1, 1, 1), **split)
        model, start_epoch, state, history = build_training_model(cfg, probe.class_names), 0, None, []
    spec = model.cfg.backbone
    train_set = build_dataset(cfg.dataset, cfg.data_root, "train", spec.image_size, spec.mean, spec.std, True, **split)
    val_set = build_dataset(cfg.dataset, cfg.data_root, "val", spec.image_size, spec.mean, spec.std, False, **split)
    if train_set.class_names != model.cfg.class_names:
        raise DatasetError(f"{cfg.data_root}: dataset classes differ from the model's (resuming another run?)")
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
    run_id = uuid.uuid4().hex if state is None else state.get("run_id") or uuid.uuid4().hex
    if state is not None:
        load_optimizer_state(optimizer, scheduler, scaler, state, out / TRAIN_STATE)
    loss_fn = make_loss(cfg, targets)
    if not resume:  # the data and model are ready: this run starts writing
        hold_output(held, out, ddp.main, resume, overwrite)
    if overwrite and ddp.main:  # the old run's files go now
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)

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
            history.append(record)
            state = make_state(model, optimizer, scheduler, scaler, epoch + 1, cfg, history, run_id)
            write_epoch(out, model, state)
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
    metrics = evaluate_model(model, dataset, device=device)
    model.train()
    return {k: metrics[k] for k in ("mAP", "few@1", "few@5", "few@10") if k in metrics}
