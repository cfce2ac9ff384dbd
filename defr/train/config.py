"""``TrainConfig``, the settings of a training run (a YAML file or packaged preset, then overrides)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

import yaml

from defr.data import DATASETS
from defr.errors import ConfigError
from defr.losses import LOSSES
from defr.machine import check_device, check_seed
from defr.model.factory import INITS
from defr.typecheck import check_field_types

MAX_EPOCHS = 100_000
MAX_WORKERS = 256  # DataLoader worker processes


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


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last silently; the
    JSON readers refuse it too)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


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
        values = yaml.load(text, _ConfigLoader) or {}  # noqa: S506 (a SafeLoader)
    except (yaml.YAMLError, ValueError) as e:  # ValueError: an integer of over 4,300 digits
        raise ConfigError(f"config {path_or_preset!r}: not valid YAML ({' '.join(str(e).split())})") from None
    except RecursionError:
        raise ConfigError(f"config {path_or_preset!r}: not valid YAML (nested too deeply)") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config {path_or_preset!r}: expected a mapping of TrainConfig fields")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted((key for key in values if key not in known), key=repr)  # keys may be numbers too
    if unknown:
        raise ConfigError(f"config {path_or_preset!r}: unknown keys {unknown}")
    return values
