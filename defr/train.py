"""Training: AdamW (no weight decay), cosine schedule with warm restarts, oversampling, DDP.

Determinism: the data order and the augmentation randomness of an epoch depend only on
(seed, epoch, rank), and a checkpoint is written at every epoch end, so ``--resume`` continues
bit-for-bit on a CPU.

Files in ``OUTPUT`` after each epoch, written in this order, each atomically:
``train_state.pt`` (epoch, optimizer, scheduler, scaler, the metrics of every epoch so far AND the
model weights: everything ``--resume`` needs, in one file, so it is consistent by construction),
``model.safetensors`` (the published checkpoint, its metadata stamped with the epoch and the
training config), ``metrics.jsonl`` (one line per epoch, rewritten from the state). A kill at any
instant leaves a state to resume from: ``metrics.jsonl`` is rewritten from the state on resume,
and a ``model.safetensors`` older than the state (a kill between the writes) is rewritten from
the state, with a message.

The output folder: a run refuses an ``OUTPUT`` that holds a run (any of the three files) unless
``resume`` (continue it) or ``overwrite`` (its three files are removed once the data and model
are ready; nothing else in the folder is touched). ``OUTPUT/train.lock`` is held (``flock``) from
the moment the run writes there (the data and model are ready; nothing is written before, so a run
that fails on bad input leaves no folder) to its end, and names its process: a second run into the
same folder stops with an error naming that pid; the lock of a process that died is free again
(the kernel releases it). A full disk stops the run with one line; the files of the last finished
epoch stay intact and resumable.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm

from defr.data import DATASETS, DatasetError, build_dataset, oversampling_indices
from defr.errors import ConfigError, DefrError
from defr.eval.classification import evaluate_model
from defr.files import atomic_path, write_with
from defr.jsonio import JsonInputError, dump_json, parse_json, read_jsonl
from defr.losses import LOSSES
from defr.machine import check_device, check_seed
from defr.model import DEFR, DEFRConfig, build_model, save_checkpoint
from defr.model.checkpoint import checkpoint_metadata
from defr.model.factory import INITS
from defr.model.state_dicts import state_dict_problems
from defr.typecheck import check_field_types

CHECKPOINT = "model.safetensors"
TRAIN_STATE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = "train.lock"
RUN_FILES = (TRAIN_STATE, CHECKPOINT, METRICS_FILE)
MAX_EPOCHS = 100_000
# What a resume may change: more (or as many) epochs, and how it runs; everything else (image size, loss, lr,
# data, model, seed, ...) is part of the run and is refused when it differs from the recorded settings.
RESUMABLE = ("epochs", "workers", "device", "output")
MAX_WORKERS = 256  # DataLoader worker processes


class ResumeError(DefrError, ValueError):
    """A run folder that ``--resume`` cannot continue from; the message says what is missing or differs."""


class TrainOutputError(DefrError, RuntimeError):
    """An output folder this run may not or cannot write: it holds another run, another process is
    writing it, or the disk is full; the message says what to do."""


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
        check_field_types(self)  # a YAML ``epochs: "3"`` or ``image_size: [64]`` is refused by name
        if self.dataset not in DATASETS:
            raise ConfigError(f"dataset must be one of {list(DATASETS)}, not {self.dataset!r}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {sorted(LOSSES)}, not {self.loss!r}")
        if self.init not in INITS:
            raise ConfigError(f"init must be one of {list(INITS)}, not {self.init!r}")
        for name in ("epochs", "batch_size", "accumulate", "image_size", "restart_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.logit_scale is not None and not (self.logit_scale > 0 and math.isfinite(self.logit_scale)):
            raise ConfigError(f"logit_scale must be a finite number > 0, got {self.logit_scale}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.epochs > MAX_EPOCHS:
            raise ConfigError(f"epochs must be <= {MAX_EPOCHS}, got {self.epochs}")
        if not 0 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"workers must be in [0, {MAX_WORKERS}], got {self.workers}")
        if self.min_positives < 0:
            raise ConfigError(f"min_positives must be >= 0, got {self.min_positives}")
        check_seed(self.seed)
        check_device(self.device, allow_auto=True)

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1.5e-5 if is_clip_backbone(self.backbone) else 1e-4


def is_clip_backbone(name: str) -> bool:
    return name.startswith("ViT-") or name.startswith("clip")


def load_config(path_or_preset: str, overrides: dict) -> TrainConfig:
    """A YAML file, or a packaged preset by name (``table4/clip-language-lse``), then ``overrides``."""
    return TrainConfig(**{**config_values(path_or_preset), **overrides})


def resume_config(output: str, config_path: str | None, overrides: dict) -> TrainConfig:
    """The settings to continue the run in ``output`` with: those it recorded, then the config file's and
    ``overrides`` (``train(resume=True)`` refuses any that change what a resume may not: ``RESUMABLE``)."""
    recorded = _recorded_settings(Path(output))
    values = {**recorded, **(config_values(config_path) if config_path else {}), **overrides, "output": output}
    return TrainConfig(**values)


def _recorded_settings(out: Path) -> dict:
    """The training settings recorded with the run in ``out`` (its checkpoint's header, else its train state)."""
    _check_resumable(out)
    recorded = _published_settings(out / CHECKPOINT)
    if recorded is None:
        recorded = _state_settings(_load_state(out / TRAIN_STATE), out / TRAIN_STATE)
    known = {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in recorded.items() if k in known}


def config_values(path_or_preset: str) -> dict:
    """The settings of a YAML config file or packaged preset (checked against TrainConfig's field names)."""
    path = Path(path_or_preset)
    if path.is_file():
        data = path.read_bytes()
    else:
        preset = resources.files("defr.configs").joinpath(f"{path_or_preset}.yaml")
        if not preset.is_file():
            raise ConfigError(f"config {path_or_preset!r}: no such file or packaged preset")
        data = preset.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config {path_or_preset!r}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path_or_preset!r}: not valid YAML ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config {path_or_preset!r}: expected a mapping of TrainConfig fields")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"config {path_or_preset!r}: unknown keys {unknown}")
    return values


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
    data or settings (before anything is written), ``ResumeError`` when the run folder cannot be
    continued, ``TrainOutputError`` for an output that holds a run (neither flag), that another
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
        _check_fresh_output(out, overwrite)  # refused at once, before anything is built
    with ExitStack() as held:
        return _train(cfg, ddp, out, resume, overwrite, held)


def _hold_output(held: ExitStack, out: Path, ddp: Distributed, resume: bool, overwrite: bool) -> None:
    """Take ``OUTPUT``'s lock (rank 0) for the rest of the run; nothing is written into ``OUTPUT`` before."""
    if not ddp.main:
        return
    held.enter_context(run_lock(out))
    if not resume:
        _check_fresh_output(out, overwrite)  # again under the lock: a run may have finished meanwhile


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold ``OUTPUT/train.lock`` (an exclusive ``flock``, with this pid written in it) while inside;
    TrainOutputError naming the holder's pid when another process holds it. Temporaries that a
    killed run left in ``OUTPUT`` are removed once the lock is held (no other run writes there)."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise TrainOutputError(
                f"{out}: another defr train (pid {holder}) is writing this output; wait for it to end "
                "or choose another --output"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        for name in RUN_FILES:
            for tmp in out.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race with a new holder)


def _check_fresh_output(out: Path, overwrite: bool) -> None:
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held and not overwrite:
        raise TrainOutputError(
            f"{out}: holds a training run ({', '.join(held)}); continue it with --resume, replace it with "
            "--overwrite, or choose another --output"
        )


def _train(cfg: TrainConfig, ddp: Distributed, out: Path, resume: bool, overwrite: bool, held: ExitStack) -> Path:
    device = pick_device(cfg.device, ddp.local_rank)
    split = dict(val_fraction=cfg.val_fraction, seed=cfg.seed)
    if resume:
        _check_resumable(out)
        _hold_output(held, out, ddp, resume, overwrite)  # ``_resume`` repairs files: under the lock
        model, start_epoch, state = _resume(out, cfg)
        history = _metric_history(state)
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
        _load_optimizer_state(optimizer, scheduler, scaler, state, out / TRAIN_STATE)
    loss_fn = make_loss(cfg, targets)
    if not resume:  # the data and model are ready: this run starts writing
        _hold_output(held, out, ddp, resume, overwrite)
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
            state = _train_state(model, optimizer, scheduler, scaler, epoch + 1, cfg, history, run_id)
            _write_epoch(out, model, state)
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


def _train_state(
    model: DEFR, optimizer, scheduler, scaler, epoch: int, cfg: TrainConfig, history: list, run_id: str
) -> dict:
    """Everything ``--resume`` needs after ``epoch`` epochs, for one file (``history``: the metrics
    record of every epoch so far; ``run_id``: made when the run started, kept by its resumes)."""
    return {
        "run_id": run_id,
        "epoch": epoch,
        "metrics": json.dumps(history),
        "config": json.dumps(model.cfg.to_dict()),
        "train": json.dumps(asdict(cfg)),
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
    }


def _write_epoch(out: Path, model: DEFR, state: dict) -> None:
    """The train state, then the published checkpoint, then the metrics lines (the order ``_resume``
    relies on); TrainOutputError when the disk is full (the previous epoch's files stay intact)."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        # write_with keeps the OSError that torch.save would turn into its "unexpected pos" RuntimeError
        write_with(out / TRAIN_STATE, lambda f: torch.save(state, f))
        _publish(out, model, state)
        _write_metrics(out / METRICS_FILE, parse_json(state["metrics"], "the train state's metrics"))
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise TrainOutputError(
            f"{out}: the disk is full ({e.strerror}) while writing epoch {state['epoch']}; the last finished "
            "epoch's files are intact: free space and continue with --resume"
        ) from None


def _write_metrics(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text("".join(json.dumps(record) + "\n" for record in history))


def _publish(out: Path, model: DEFR, state: dict) -> None:
    metadata = {
        "epoch": state["epoch"],
        "train": parse_json(state["train"], "the train state's settings"),
        "run_id": state.get("run_id"),
    }
    save_checkpoint(model, out / CHECKPOINT, metadata=metadata)


def _check_resumable(out: Path) -> None:
    if not (out / TRAIN_STATE).is_file():
        raise ResumeError(f"--resume: {out} has no {CHECKPOINT} and {TRAIN_STATE} to resume from (no epoch completed)")


def _load_state(state_path: Path) -> dict:
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as e:  # a file torch cannot read, or pickled code that weights_only refuses
        raise ResumeError(f"--resume: {state_path}: cannot read ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not {"epoch", "model", "config", "optimizer"} <= set(state):
        raise ResumeError(
            f"--resume: {state_path} does not hold the model weights with the optimizer state "
            "(written by an older defr); start the run again"
        )
    return state


def _state_json(state: dict, key: str, state_path: Path) -> dict:
    try:
        value = parse_json(state[key], f"--resume: {state_path}: its {key!r} record")
    except (JsonInputError, TypeError) as e:
        raise ResumeError(str(e) if isinstance(e, JsonInputError) else f"--resume: {state_path}: bad {key!r}") from None
    if not isinstance(value, dict):
        raise ResumeError(f"--resume: {state_path}: its {key!r} record is not a JSON object")
    return value


def _state_settings(state: dict, state_path: Path) -> dict:
    return _state_json(state, "train", state_path) if "train" in state else {}


def _published_settings(path: Path) -> dict | None:
    try:
        recorded = checkpoint_metadata(path).get("train")
    except DefrError:
        return None
    return recorded if isinstance(recorded, dict) else None


def _check_state(state: dict, state_path: Path, cfg: TrainConfig) -> DEFRConfig:
    """The state's model config, after checking the state against this run's settings, before anything is
    allocated: its epoch, the settings it recorded (``RESUMABLE``), and its tensors' shapes against its config
    (on the ``meta`` device, so a config claiming a huge model costs nothing)."""
    epoch = state["epoch"]
    if type(epoch) is not int or epoch < 0:
        raise ResumeError(f"--resume: {state_path}: 'epoch' must be a whole number >= 0, got {epoch!r}")
    if epoch > cfg.epochs:
        raise ResumeError(
            f"--resume: {state_path} has {epoch} epochs done, more than epochs={cfg.epochs}: ask for more epochs"
        )
    recorded = _state_settings(state, state_path)
    now = parse_json(dump_json(asdict(cfg), "the settings"), "the settings")  # as the state records them
    changed = [
        f"{k} {recorded[k]!r} -> {now[k]!r}"
        for k in now
        if k not in RESUMABLE and k in recorded and recorded[k] != now[k]
    ]
    if changed:
        raise ResumeError(
            f"--resume: settings differ from the run's ({'; '.join(changed)}); a resume may change only "
            f"{', '.join(RESUMABLE)}: start a new run (another --output) for other settings"
        )
    try:
        model_cfg = DEFRConfig.from_dict(_state_json(state, "config", state_path))
    except (DefrError, ValueError, TypeError, KeyError) as e:
        raise ResumeError(f"--resume: {state_path}: its model config is not valid ({e})") from None
    if not isinstance(state["model"], dict) or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise ResumeError(f"--resume: {state_path}: 'model' is not a dict of tensors")
    with torch.device("meta"):
        skeleton = DEFR(model_cfg)
    problems = state_dict_problems(skeleton, state["model"])
    if problems:
        raise ResumeError(f"--resume: {state_path}: the weights do not match the run's model: {problems}")
    return model_cfg


def _load_optimizer_state(optimizer, scheduler, scaler, state: dict, state_path: Path) -> None:
    """The optimizer, schedule and scaler of the state; ResumeError for another model's (other shapes)."""
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise ResumeError(f"--resume: {state_path}: optimizer state of another model ({e})") from None
    for group in optimizer.param_groups:
        for p in group["params"]:
            moments = [v for v in optimizer.state.get(p, {}).values() if isinstance(v, torch.Tensor) and v.dim()]
            if any(m.shape != p.shape for m in moments):
                raise ResumeError(f"--resume: {state_path}: optimizer state of another model (moment shapes differ)")


def _resume(out: Path, cfg: TrainConfig) -> tuple[DEFR, int, dict]:
    """The model and train state of the last completed epoch in ``out``, checked against this run's settings
    (``_check_state``); repairs what a kill left behind."""
    state_path = out / TRAIN_STATE
    _check_resumable(out)
    state = _load_state(state_path)
    model = DEFR(_check_state(state, state_path, cfg))
    model.load_state_dict(state["model"])
    published = out / CHECKPOINT
    published_run = _published_run(published)
    if published_run is not None and state.get("run_id") is not None and published_run != state["run_id"]:
        raise ResumeError(
            f"--resume: {published.name} and {TRAIN_STATE} in {out} are of different runs (run ids "
            f"{published_run} and {state['run_id']}); nothing was changed: start a new run in another folder"
        )
    if "metrics" not in state:  # written before the state carried the metrics: keep the lines it covers
        state["metrics"] = json.dumps(_metric_lines(out / METRICS_FILE, state["epoch"]))
    _write_metrics(out / METRICS_FILE, _metric_history(state))
    epoch = _published_epoch(published)
    if epoch != state["epoch"]:
        tqdm.write(
            f"--resume: {published.name} is from epoch {epoch}, {TRAIN_STATE} from epoch {state['epoch']} "
            f"(the last run stopped between the two writes): rewriting {published.name} from {TRAIN_STATE}"
        )
        _publish(out, model, state)
    return model, state["epoch"], state


def _published_run(path: Path) -> str | None:
    try:
        return checkpoint_metadata(path).get("run_id")
    except DefrError:
        return None


def _published_epoch(path: Path) -> int | None:
    try:
        return checkpoint_metadata(path).get("epoch")
    except DefrError:
        return None


def _metric_history(state: dict) -> list[dict]:
    return parse_json(state["metrics"], "the train state's metrics")


def _metric_lines(path: Path, epochs: int) -> list[dict]:
    """The metric lines of epochs up to ``epochs`` (a run killed between the writes left later ones)."""
    if not path.is_file():
        return []
    # a line cut short by a kill is skipped
    records = (record for _, record in read_jsonl(path, skip_invalid=True))
    return [r for r in records if type(r.get("epoch")) is int and r["epoch"] <= epochs]
