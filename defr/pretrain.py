"""``defr pretrain``: contrastive vision–language pretraining of tiny-vit on synthetic captioned scenes.

LiT-style: the text side is frozen sentence embeddings from the encoder the DEFR head is later
initialised from (MiniLM by default); the image tower and a projection ``P`` [D, E] are trained. Scores
are ``γ · cos(f, P·t)``, the DEFR head's own form, so ``--init language`` on the shipped weights
(``W = T·Pᵀ``, ``defr.model.factory``) starts exactly where pretraining left the classes.

Two losses, summed:
- **image ↔ caption** (CLIP's symmetric InfoNCE over the batch): an image's caption embedding is the
  normalised mean of its clauses' embeddings; identical captions in a batch are all positives. Half of
  each batch are hard negatives of the other half (``defr.data.synth.pretraining``).
- **pair ↔ clause**: each pair's CLS feature read through DEFR's hard pair mask in the last block
  (``pair_cls_features_standard_ops``) against every seen clause, so the token the mask confines learns
  to describe that pair; this is what HOI detection reads later.

Data are drawn on the fly (batch ``k`` from seed ``PRETRAIN_SEED_START + k``), so a run is determined
by its config and resumes exactly from ``OUTPUT/pretrain_state.pt`` (saved every ``log_every`` steps,
with a zero-shot evaluation on a held-out synthetic split written to ``pretrain_log.jsonl``).
The end product: ``OUTPUT/tiny-vit-defr-synth.safetensors`` (fp16; our ViT names plus ``proj``) and
its sidecar ``.json`` (SHA-256, command, commit, seeds, config), what ``defr/assets/pretrained`` ships.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from defr.data.synth.pretraining import (
    HELD_OUT,
    HELD_OUT_CLASSES,
    PRETRAIN_CLASSES,
    PRETRAIN_SEED_START,
    ZERO_SHOT_SEED_START,
    CaptionedImage,
    class_names,
    draw_pretraining_batch,
    draw_zero_shot_split,
)
from defr.errors import ConfigError
from defr.eval.ap import mean_ap
from defr.eval.classification import image_class_aps
from defr.files import OutputSet, atomic_path, write_json
from defr.images import resize_normalise, rgb_tensor
from defr.jsonio import parse_json
from defr.machine import machine_info
from defr.model.backbones import tiny_vit_spec
from defr.model.pair_attention import cls_attention_bias, pair_cls_features_standard_ops, pair_masks
from defr.model.vit import VisionTransformer

WEIGHTS_NAME = "tiny-vit-defr-synth.safetensors"
STATE_NAME = "pretrain_state.pt"
LOG_NAME = "pretrain_log.jsonl"


@dataclass
class PretrainConfig:
    output: str = "runs/pretrain"
    steps: int = 2400
    batch_size: int = 64  # half anchors, half their hard negatives
    image_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    log_every: int = 200  # steps between a zero-shot evaluation and a saved state
    eval_images: int = 300
    text_encoder: str = "minilm"
    pair_loss_weight: float = 1.0
    workers: int = 1  # processes drawing batches (rendering is ~20 % of a step on one core)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "image_size", "log_every", "eval_images"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"PretrainConfig.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.batch_size % 2:
            raise ConfigError(
                f"PretrainConfig.batch_size must be even (anchors + hard negatives), got {self.batch_size}"
            )
        if self.image_size % 16:
            raise ConfigError(f"PretrainConfig.image_size must be a multiple of 16, got {self.image_size}")
        if PRETRAIN_SEED_START + self.steps >= ZERO_SHOT_SEED_START:
            raise ConfigError(f"PretrainConfig.steps must be < {ZERO_SHOT_SEED_START - PRETRAIN_SEED_START}")
        for name in ("lr", "weight_decay", "pair_loss_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"PretrainConfig.{name} must be a finite number >= 0, got {value!r}")
        if self.workers < 0:
            raise ConfigError(f"PretrainConfig.workers must be >= 0, got {self.workers}")


class AlignedTower(nn.Module):
    """tiny-vit and the projection ``proj`` [D, E] into the text space; a learned temperature."""

    def __init__(self, image_size: int, text_dim: int):
        super().__init__()
        self.spec = tiny_vit_spec(image_size)
        self.vit = VisionTransformer(self.spec.vit)
        width = self.spec.vit.width
        self.proj = nn.Parameter(torch.randn(width, text_dim) * width**-0.5)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def class_weights(self, text: torch.Tensor) -> torch.Tensor:
        """text: [M, E] → unit rows [M, D] = normalise(T·Pᵀ), the DEFR head's initial rows."""
        return F.normalize(text @ self.proj.t(), dim=-1)

    def features(self, images: torch.Tensor, boxes_h: torch.Tensor, boxes_o: torch.Tensor, index: torch.Tensor):
        """(image features [B, D], pair features [P, D]): the CLS read unmasked and through each pair's hard mask.

        images: [B, 3, S, S]; boxes_h, boxes_o: [P, 4] float, pixels of the S×S input; index: [P] long.
        """
        vit, s = self.vit, self.spec.image_size
        tokens = vit.tokens(images, num_blocks=len(vit.blocks) - 1)
        b = images.shape[0]
        whole = boxes_h.new_tensor([0.0, 0.0, s, s]).expand(b, 4)
        boxes_h, boxes_o = torch.cat([boxes_h, whole]), torch.cat([boxes_o, whole])
        index = torch.cat([index, torch.arange(b)])
        bias = cls_attention_bias(pair_masks(boxes_h, boxes_o, s, vit.cfg.patch_size), "hard", tokens.dtype)
        feats = vit.ln_post(pair_cls_features_standard_ops(vit.blocks[-1], tokens, bias, index))
        return feats[-b:], feats[:-b]

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(100.0)).exp()


@dataclass
class Batch:
    images: torch.Tensor  # [B, 3, S, S] normalised
    boxes_h: torch.Tensor  # [P, 4] float, pixels of the S×S input
    boxes_o: torch.Tensor
    pair_index: torch.Tensor  # [P] long
    pair_class: torch.Tensor  # [P] long, index into CLASSES
    image_classes: list[list[int]]


def collate(items: list[CaptionedImage], size: int, mean, std) -> Batch:
    """Captioned images → tensors at ``size`` px; boxes (0-based inclusive pixels) scaled to the input."""
    images = resize_normalise([rgb_tensor(it.image) for it in items], size, mean, std)
    hs, os_, index, classes = [], [], [], []
    for i, it in enumerate(items):
        w, h = it.annotation.size
        scale = torch.tensor([size / w, size / h, size / w, size / h])
        for bh, bo, c in zip(it.annotation.boxes_h, it.annotation.boxes_o, it.annotation.classes, strict=True):
            hs.append((torch.tensor(bh, dtype=torch.float32) + torch.tensor([0, 0, 1, 1])) * scale)
            os_.append((torch.tensor(bo, dtype=torch.float32) + torch.tensor([0, 0, 1, 1])) * scale)
            index.append(i)
            classes.append(c)
    return Batch(
        images,
        torch.stack(hs),
        torch.stack(os_),
        torch.tensor(index),
        torch.tensor(classes),
        [list(it.annotation.classes) for it in items],
    )


def caption_embeddings(text: torch.Tensor, image_classes: list[list[int]]) -> torch.Tensor:
    """text: [C, E] unit clause embeddings → [B, E]: each caption as the normalised mean of its clauses."""
    return F.normalize(torch.stack([text[c].mean(0) for c in image_classes]), dim=-1)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against target distributions: logits, targets [N, M] (rows of targets sum to 1)."""
    return -(targets * logits.log_softmax(dim=-1)).sum(-1).mean()


def pretrain_losses(model: AlignedTower, batch: Batch, text: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"image": image ↔ caption InfoNCE, "pair": pair ↔ seen clause cross-entropy}; text: [C, E] unit rows."""
    image_f, pair_f = model.features(batch.images, batch.boxes_h, batch.boxes_o, batch.pair_index)
    scale = model.scale()
    captions = model.class_weights(caption_embeddings(text, batch.image_classes))
    logits = scale * F.normalize(image_f, dim=-1) @ captions.t()  # [B, B]
    keys = [tuple(sorted(c)) for c in batch.image_classes]
    same = torch.tensor([[a == b for b in keys] for a in keys], dtype=logits.dtype)
    targets = same / same.sum(-1, keepdim=True)
    image_loss = (soft_cross_entropy(logits, targets) + soft_cross_entropy(logits.t(), targets)) / 2
    seen = torch.tensor(PRETRAIN_CLASSES)
    pair_logits = scale * F.normalize(pair_f, dim=-1) @ model.class_weights(text[seen]).t()
    position = {int(c): i for i, c in enumerate(PRETRAIN_CLASSES)}
    pair_loss = F.cross_entropy(pair_logits, torch.tensor([position[int(c)] for c in batch.pair_class]))
    return {"image": image_loss, "pair": pair_loss}


@torch.no_grad()
def zero_shot_scores(model: AlignedTower, batches: list[Batch], text: torch.Tensor) -> dict:
    """Zero-shot on the held-out split, every class scored by its text alone (held-out classes included).

    Image level: 11-point AP per class of cos(f, T·Pᵀ) (mAP over the seen / the held-out classes).
    Pair level: top-1 accuracy of each pair's masked feature over all classes (seen / held-out pairs).
    """
    model.eval()
    weights = model.class_weights(text)
    image_scores, image_labels, top1, pair_class = [], [], [], []
    for b in batches:
        image_f, pair_f = model.features(b.images, b.boxes_h, b.boxes_o, b.pair_index)
        image_scores.append(F.normalize(image_f, dim=-1) @ weights.t())
        labels = torch.zeros(len(b.image_classes), text.shape[0], dtype=torch.bool)
        for i, c in enumerate(b.image_classes):
            labels[i, c] = True
        image_labels.append(labels)
        top1.append((F.normalize(pair_f, dim=-1) @ weights.t()).argmax(-1))
        pair_class.append(b.pair_class)
    model.train()
    labels = torch.cat(image_labels).numpy()
    aps = image_class_aps(torch.cat(image_scores).numpy(), labels, np.ones_like(labels))
    hits, truth = torch.cat(top1), torch.cat(pair_class)
    held = torch.isin(truth, torch.tensor(HELD_OUT_CLASSES))
    return {
        "zero_shot_mAP": mean_ap(aps, range(len(aps))),
        "zero_shot_mAP_seen": mean_ap(aps, PRETRAIN_CLASSES),
        "zero_shot_mAP_held_out": mean_ap(aps, HELD_OUT_CLASSES),
        "pair_top1_seen": float((hits == truth)[~held].float().mean()),
        "pair_top1_held_out": float((hits == truth)[held].float().mean()) if held.any() else None,
    }


class _Batches(torch.utils.data.IterableDataset):
    """Batches ``start`` .. ``end - 1`` of the run, drawn in worker processes (order kept)."""

    def __init__(self, cfg: PretrainConfig, start: int, mean, std):
        self.cfg, self.start, self.mean, self.std = cfg, start, mean, std

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for step in range(self.start + worker, self.cfg.steps, workers):
            items = draw_pretraining_batch(PRETRAIN_SEED_START + step, self.cfg.batch_size, self.cfg.image_size)
            yield collate(items, self.cfg.image_size, self.mean, self.std)


def learning_rate(cfg: PretrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to zero at ``cfg.steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


def pretrain(cfg: PretrainConfig, resume: bool = False, command: str | None = None) -> Path:
    """Run (or resume) pretraining; returns the path of the weights file written at the end."""
    from defr.model.text import class_embeddings, class_prompts, load_text_encoder

    out = Path(cfg.output)
    state_path = out / STATE_NAME
    if state_path.exists() and not resume:
        raise ConfigError(f"{out}: holds a pretraining run ({STATE_NAME}); pass --resume to continue it")
    if resume and not state_path.is_file():
        raise ConfigError(f"{out}: no {STATE_NAME} to resume")
    out.mkdir(parents=True, exist_ok=True)
    commit = _commit()  # the code that runs: HEAD may move while a long run goes on
    encoder = load_text_encoder(cfg.text_encoder)
    text = class_embeddings(encoder, class_prompts(class_names(), ("{}",))).float()  # [C, E], unit rows
    model = AlignedTower(cfg.image_size, text.shape[1])
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and n != "proj"]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and n != "proj")]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=cfg.lr
    )
    step, seconds, log = 0, 0.0, []
    if resume:
        step, seconds, log = _load_state(state_path, cfg, model, opt)
    spec = model.spec
    held_out = [
        collate(chunk, cfg.image_size, spec.mean, spec.std)
        for chunk in _chunks(draw_zero_shot_split(cfg.eval_images, cfg.image_size), 50)
    ]
    if step == 0:
        log.append({"step": 0, "images_seen": 0, "seconds": 0.0, **zero_shot_scores(model, held_out, text)})
    loader = torch.utils.data.DataLoader(
        _Batches(cfg, step, spec.mean, spec.std), batch_size=None, num_workers=cfg.workers, collate_fn=lambda b: b
    )
    running: dict[str, list[float]] = {"image": [], "pair": []}
    started = time.perf_counter() - seconds
    for batch in tqdm(loader, desc="pretrain", unit="step", initial=step, total=cfg.steps, leave=False):
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step)
        losses = pretrain_losses(model, batch, text)
        loss = losses["image"] + cfg.pair_loss_weight * losses["pair"]
        if not torch.isfinite(loss):
            raise ConfigError(f"loss is {loss.item()} at step {step}: lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        for k, v in losses.items():
            running[k].append(v.item())
        step += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            elapsed = time.perf_counter() - started
            entry = {
                "step": step,
                "images_seen": step * cfg.batch_size,
                "seconds": round(elapsed, 1),
                "loss_image": float(np.mean(running["image"])),
                "loss_pair": float(np.mean(running["pair"])),
                "scale": model.scale().item(),
                **zero_shot_scores(model, held_out, text),
            }
            log.append(entry)
            running = {"image": [], "pair": []}
            _save_state(state_path, cfg, model, opt, step, elapsed, log)
            _write_log(out, log)
            print(json.dumps(entry), file=sys.stderr, flush=True)
    return write_weights(model, out / WEIGHTS_NAME, cfg, log, command, commit)


def _chunks(items: list, n: int) -> list[list]:
    return [items[i : i + n] for i in range(0, len(items), n)]


def _save_state(path: Path, cfg, model, opt, step: int, seconds: float, log: list) -> None:
    state = {
        "config": json.dumps(asdict(cfg)),
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": step,
        "seconds": seconds,
        "log": json.dumps(log),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_state(path: Path, cfg: PretrainConfig, model: AlignedTower, opt) -> tuple[int, float, list]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = parse_json(state["config"], f"{path}: its config")
        step, seconds, log = int(state["step"]), float(state["seconds"]), parse_json(state["log"], f"{path}: its log")
    except Exception as e:  # unreadable or foreign: one line, never a traceback
        raise ConfigError(f"{path}: not a pretraining state ({type(e).__name__}: {e})") from None
    changed = {
        k: (saved.get(k), v) for k, v in asdict(cfg).items() if k not in ("output", "workers") and saved.get(k) != v
    }
    if changed:
        raise ConfigError(f"{path}: resume with the run's own settings; changed: {changed}")
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise ConfigError(f"{path}: the saved state does not fit the model ({e})") from None
    return step, seconds, log


def _write_log(out: Path, log: list[dict]) -> None:
    with atomic_path(out / LOG_NAME) as tmp:
        Path(tmp).write_text("".join(json.dumps(e) + "\n" for e in log))
    plot_log(log, out / "pretrain_log.png")


def plot_log(log: list[dict], path: Path) -> Path:
    """Losses and zero-shot scores (held-out synthetic split) against images seen, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    trained = [e for e in log if "loss_image" in e]
    for key, label in (("loss_image", "image ↔ caption"), ("loss_pair", "pair ↔ clause")):
        left.plot([e["images_seen"] for e in trained], [e[key] for e in trained], marker=".", label=label)
    left.set(xlabel="images seen", ylabel="loss", title="pretraining loss")
    curves = (
        ("zero_shot_mAP_seen", "image mAP, seen classes"),
        ("zero_shot_mAP_held_out", "image mAP, held-out classes"),
        ("pair_top1_seen", "pair top-1, seen"),
        ("pair_top1_held_out", "pair top-1, held-out"),
    )
    for key, label in curves:
        points = [(e["images_seen"], e[key]) for e in log if e.get(key) is not None]
        right.plot(*zip(*points, strict=True), marker=".", label=label)
    right.set(xlabel="images seen", ylabel="fraction", ylim=(0, 1), title="zero-shot, held-out synthetic split")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def _commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        return subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def write_weights(
    model: AlignedTower, path: Path, cfg: PretrainConfig, log: list[dict], command: str | None, commit: str | None
) -> Path:
    """The tower's weights in fp16 safetensors (our ViT names, ``proj``) and its sidecar ``.json``."""
    from safetensors.torch import save_file

    state = {k: v.detach().half().contiguous() for k, v in model.vit.state_dict().items()}
    state["proj"] = model.proj.detach().half().contiguous()
    # one set through the seam: never new weights beside an old sidecar (or the reverse)
    with OutputSet({"weights": path, "sidecar": path.with_suffix(".json")}) as staged:
        save_file(state, str(staged["weights"]))
        sidecar = _sidecar(path, staged["weights"], cfg, log, command, commit)
        write_json(sidecar, staged["sidecar"], indent=1)
    return path


def _sidecar(path: Path, staged: Path, cfg: PretrainConfig, log: list[dict], command: str | None, commit) -> dict:
    """What the weights file is and how it was made; ``staged``: the bytes that become ``path``."""
    digest = hashlib.sha256(staged.read_bytes()).hexdigest()
    return {
        "format": "defr-pretrained/1",
        "name": "defr-synth",
        "backbone": "tiny-vit",
        "image_size": cfg.image_size,
        "text_encoder": cfg.text_encoder,
        "templates": ["{}"],
        "file": path.name,
        "sha256": digest,
        "bytes": staged.stat().st_size,
        "command": command,
        "commit": commit,
        "seeds": {
            "batches": [PRETRAIN_SEED_START, PRETRAIN_SEED_START + cfg.steps - 1],
            "zero_shot_split": ZERO_SHOT_SEED_START,
        },
        "held_out": [list(c) for c in HELD_OUT],
        "config": asdict(cfg),
        "images_seen": cfg.steps * cfg.batch_size,
        "seconds": log[-1].get("seconds") if log else None,
        "machine": machine_info(),
    }
