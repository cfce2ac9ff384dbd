"""Training (``defr train``): the loop (``defr.train.loop``), its settings (``defr.train.config``) and its run
folder (``defr.train.run_folder``: files, its claim on the output seam, ``--resume``). The names below are
the public ones.
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
    METRICS_FILE,
    RESUMABLE,
    RUN_FILES,
    TRAIN_STATE,
    claim_output,
    resume_config,
)

__all__ = [
    "CHECKPOINT",
    "Distributed",
    "MAX_EPOCHS",
    "MAX_WORKERS",
    "METRICS_FILE",
    "RESUMABLE",
    "RUN_FILES",
    "TRAIN_STATE",
    "TrainConfig",
    "build_training_model",
    "claim_output",
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
    "seed_everything",
    "train",
]
