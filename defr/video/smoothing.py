"""Scores smoothed over time per (human track, object track, HOI class).

Methods (``SMOOTHING_METHODS``): ``ema`` (s_t = α·x_t + (1 − α)·s_{t−1}, s = 0 before a key is first
seen), ``window`` (mean of the last W raw scores), ``none`` (raw). A key absent from a frame scores
0 there, so smoothed scores decay when a pair disappears or stops scoring.

A key starts when its raw score reaches ``min_score`` and is forgotten once its smoothed score falls
below ``floor`` (EMA) or its window holds only zeros: memory is bounded by the live pairs, not by
the stream's length.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from defr.errors import ConfigError

SMOOTHING_METHODS = ("ema", "window", "none")
Key = tuple[int, int, int]  # (human track id, object track id, HOI class)


@dataclass
class SmoothingConfig:
    method: str = "ema"
    alpha: float = 0.5  # EMA weight of the newest score
    window: int = 5  # frames averaged by ``window``
    min_score: float = 0.01  # raw score that starts a key
    floor: float = 1e-3  # smoothed score under which a key is forgotten

    def __post_init__(self) -> None:
        if self.method not in SMOOTHING_METHODS:
            raise ConfigError(f"smoothing method must be one of {SMOOTHING_METHODS}, not {self.method!r}")
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"smoothing alpha must be in (0, 1], not {self.alpha}")
        if self.window < 1:
            raise ConfigError(f"smoothing window must be >= 1 frame, not {self.window}")
        if self.min_score < 0 or self.floor < 0:
            raise ConfigError(f"min_score and floor must be >= 0, not {self.min_score}, {self.floor}")


class ScoreSmoother:
    """Raw per-frame scores ``{key: score}`` → smoothed scores of every live key."""

    def __init__(self, config: SmoothingConfig | None = None):
        self.config = config or SmoothingConfig()
        self._ema: dict[Key, float] = {}
        self._windows: dict[Key, deque] = {}

    def __len__(self) -> int:
        return len(self._ema) + len(self._windows)

    def update(self, raw: dict[Key, float]) -> dict[Key, float]:
        """One frame's raw scores (keys not in ``raw`` score 0) → ``{key: smoothed}`` of the live keys."""
        c = self.config
        fresh = [k for k, v in raw.items() if v >= c.min_score]
        if c.method == "none":
            return {k: raw[k] for k in fresh}
        if c.method == "ema":
            for k in fresh:
                self._ema.setdefault(k, 0.0)
            out = {k: c.alpha * raw.get(k, 0.0) + (1 - c.alpha) * s for k, s in self._ema.items()}
            self._ema = {k: s for k, s in out.items() if s >= c.floor or k in raw}
            return out
        for k in fresh:
            self._windows.setdefault(k, deque(maxlen=c.window))
        out = {}
        for k, w in list(self._windows.items()):
            w.append(raw.get(k, 0.0))
            out[k] = sum(w) / c.window  # a new key's window counts the frames before it as 0
            if not any(w):
                del self._windows[k]
        return out
