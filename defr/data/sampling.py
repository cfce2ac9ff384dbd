"""Class-balancing oversampling: one epoch sees every image, and every class at least ``min_positives`` times."""

from __future__ import annotations

import numpy as np

from defr.errors import ConfigError


def oversampling_indices(targets: np.ndarray, min_positives: int = 40, seed: int = 0) -> list[int]:
    """Indices of one epoch: every sample once, plus repeats of positives of under-represented classes.

    targets: [N, C] 0/1. Classes are topped up rarest first, each by repeating its positive images as
    evenly as possible (whole rounds, then a seeded random subset), and counting the positives a
    repeated multi-label image adds to other classes, so frequent classes need few or no repeats.
    A class without positives cannot be helped and is left alone. Deterministic given ``seed``.
    """
    targets = np.asarray(targets)
    if targets.ndim != 2:
        raise ConfigError(f"targets must be [N, C], got shape {targets.shape}")
    if not np.isin(targets, (0, 1)).all():
        raise ConfigError("targets must hold only 0 and 1")
    if min_positives < 0:
        raise ConfigError(f"min_positives must be >= 0, got {min_positives}")
    positive = targets.astype(bool)
    rng = np.random.default_rng(seed)
    counts = positive.sum(axis=0).astype(np.int64)
    extra: list[np.ndarray] = []
    for c in np.argsort(counts, kind="stable"):
        members = np.flatnonzero(positive[:, c])
        deficit = min_positives - counts[c]
        if len(members) == 0 or deficit <= 0:
            continue
        rounds, rest = divmod(int(deficit), len(members))
        repeats = np.concatenate([np.tile(members, rounds), rng.choice(members, rest, replace=False)])
        counts += positive[repeats].sum(axis=0)
        extra.append(repeats)
    return np.concatenate([np.arange(len(targets)), *extra]).astype(np.int64).tolist()
