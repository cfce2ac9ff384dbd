"""What a stream run measured: per-stage latency per frame (p50 / p90 / mean), skipped frames by stage.

Stages (``STAGES``): decode, detect (the object detector), track, preprocess (resize + normalise),
hoi (pairs + HOI model + scoring), draw (annotation), write (encoding and JSONL). A stage that runs
on a batch records its time divided by the batch's frames, once per frame. Percentiles are over the
last ``keep`` frames of each stage (bounded memory on an endless stream); means and counts over all.
"""

from __future__ import annotations

import threading
from collections import Counter, deque

import numpy as np

from defr.video.records import Skipped

STAGES = ("decode", "detect", "track", "preprocess", "hoi", "draw", "write")


class StageTimes:
    """Per-frame seconds of each stage; thread-safe (each stage may run on its own thread)."""

    def __init__(self, keep: int = 10_000):
        self._lock = threading.Lock()
        self._recent = {s: deque(maxlen=keep) for s in STAGES}
        self._total = dict.fromkeys(STAGES, 0.0)
        self._count = dict.fromkeys(STAGES, 0)

    def add(self, stage: str, seconds: float, frames: int = 1) -> None:
        """``seconds`` spent on ``frames`` frames in ``stage``: one sample of seconds / frames per frame."""
        if frames < 1:
            return
        with self._lock:
            self._recent[stage].extend([seconds / frames] * frames)
            self._total[stage] += seconds
            self._count[stage] += frames

    def total(self, stage: str) -> float:
        return self._total[stage]

    def summary(self) -> dict:
        """``{stage: {"p50_ms", "p90_ms", "mean_ms", "frames", "total_s"}}`` for the stages that ran."""
        out = {}
        with self._lock:
            for s in STAGES:
                if self._count[s]:
                    recent = np.asarray(self._recent[s]) * 1e3
                    out[s] = {
                        "p50_ms": round(float(np.percentile(recent, 50)), 3),
                        "p90_ms": round(float(np.percentile(recent, 90)), 3),
                        "mean_ms": round(self._total[s] / self._count[s] * 1e3, 3),
                        "frames": self._count[s],
                        "total_s": round(self._total[s], 4),
                    }
        return out


class SkipLog:
    """Skipped frames: a count per stage and the first ``keep`` of them with their reasons."""

    def __init__(self, keep: int = 100):
        self.keep = keep
        self.by_stage: Counter = Counter()
        self.first: list[dict] = []

    def add(self, s: Skipped) -> None:
        self.by_stage[s.stage] += 1
        if len(self.first) < self.keep:
            self.first.append({"frame": s.index, "stage": s.stage, "reason": s.reason})

    def __len__(self) -> int:
        return sum(self.by_stage.values())

    def summary(self) -> dict:
        return {"skipped": len(self), "skipped_by_stage": dict(self.by_stage), "skipped_frames": list(self.first)}
