"""Interaction events from smoothed scores, with hysteresis.

An event of key (human track, object track, HOI class) opens at the first frame whose smoothed
score is >= ``on`` and stays open while it is >= ``off`` (``off <= on``); it closes at the first
frame below ``off`` (or where the key is gone), and its ``end_frame`` is the last frame at or above
``off``. Events shorter than ``min_frames`` are dropped. ``peak_score`` is the highest smoothed
score in the span. Closed events come out as they close, so a writer can flush each one at once;
``close_all`` ends the open ones at the end of a stream (or at an interruption).
"""

from __future__ import annotations

from dataclasses import dataclass

from defr.errors import ConfigError
from defr.video.records import Interaction
from defr.video.smoothing import Key


@dataclass
class EventConfig:
    on: float = 0.5  # smoothed score that opens an event
    off: float = 0.3  # smoothed score under which it closes
    min_frames: int = 1  # shorter events are dropped

    def __post_init__(self) -> None:
        if not 0.0 <= self.off <= self.on <= 1.0:
            raise ConfigError(f"event thresholds need 0 <= off <= on <= 1, got on={self.on}, off={self.off}")
        if self.min_frames < 1:
            raise ConfigError(f"min_frames must be >= 1, not {self.min_frames}")


@dataclass
class _Open:
    start_frame: int
    start_s: float
    end_frame: int
    end_s: float
    peak: float


class EventDetector:
    """Smoothed scores per frame → closed ``Interaction`` events (hysteresis thresholds).

    class_names: "verb object" name of each HOI class (the HOI model's), for the events' verb and object.
    """

    def __init__(self, class_names: list[str], config: EventConfig | None = None):
        self.config = config or EventConfig()
        self.class_names = class_names
        self._open: dict[Key, _Open] = {}

    def __len__(self) -> int:
        return len(self._open)

    def update(self, frame: int, time_s: float, smoothed: dict[Key, float]) -> list[Interaction]:
        """Advance to ``frame`` (increasing) → the events that closed at it."""
        closed = []
        for key, state in list(self._open.items()):
            score = smoothed.get(key, 0.0)
            if score >= self.config.off:
                state.end_frame, state.end_s, state.peak = frame, time_s, max(state.peak, score)
            else:
                del self._open[key]
                closed.append(self._event(key, state))
        for key, score in smoothed.items():
            if key not in self._open and score >= self.config.on:
                self._open[key] = _Open(frame, time_s, frame, time_s, score)
        return _sorted([e for e in closed if e is not None])

    def close_all(self) -> list[Interaction]:
        """Close every open event at its last frame (end of stream) → those events."""
        events = [self._event(k, s) for k, s in self._open.items()]
        self._open.clear()
        return _sorted([e for e in events if e is not None])

    def _event(self, key: Key, s: _Open) -> Interaction | None:
        if s.end_frame - s.start_frame + 1 < self.config.min_frames:
            return None
        human, obj, hoi = key
        verb, _, object_name = self.class_names[hoi].rpartition(" ")
        return Interaction(human, obj, hoi, verb, object_name, s.start_frame, s.end_frame, s.start_s, s.end_s, s.peak)


def _sorted(events: list[Interaction]) -> list[Interaction]:
    return sorted(events, key=lambda e: (e.start_frame, e.human_id, e.object_id, e.hoi))
