"""Training (``defr train``): the loop (``defr.train.loop``), its settings (``defr.train.config``) and its run
folder (``defr.train.run_folder``: files, lock, ``--resume``). The names below are the public ones.
"""

from __future__ import annotations

from defr.train.config import MAX_EPOCHS, MAX_WORKERS, TrainConfig, config_values, is_clip_backbone, load_config
from defr.train.loop import (
    Distributed,
    build_training_model,
    distributed_env,
    distributed_rank,
    epoch_indices,
    init_distributed,
    make_loss,
    pick_device,
    seed_everything,
    train,
)
from defr.train.run_folder import (
    CHECKPOINT,
    LOCK_FILE,
    METRICS_FILE,
    RESUMABLE,
    RUN_FILES,
    TRAIN_STATE,
    resume_config,
    run_lock,
)

__all__ = [
    "CHECKPOINT",
    "Distributed",
    "LOCK_FILE",
    "MAX_EPOCHS",
    "MAX_WORKERS",
    "METRICS_FILE",
    "RESUMABLE",
    "RUN_FILES",
    "TRAIN_STATE",
    "TrainConfig",
    "build_training_model",
    "config_values",
    "distributed_env",
    "distributed_rank",
    "epoch_indices",
    "init_distributed",
    "is_clip_backbone",
    "load_config",
    "make_loss",
    "pick_device",
    "resume_config",
    "run_lock",
    "seed_everything",
    "train",
]
