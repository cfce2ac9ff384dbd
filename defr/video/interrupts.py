"""Ctrl-C at frame boundaries.

``run_video`` writes each frame to up to three outputs (annotated video, frames JSONL, events
JSONL). A ``KeyboardInterrupt`` raised between two of those writes would leave the video one frame
ahead of the JSONL files. ``InterruptGuard.hold()`` marks such a step: a SIGINT that arrives inside
it is delivered when the step ends, one that arrives elsewhere is delivered at once, as usual.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class InterruptGuard:
    """While entered, SIGINT goes through this guard (main thread only: elsewhere Python delivers no
    signals and the guard does nothing). Delivery calls the handler that was installed before
    (Python's default raises ``KeyboardInterrupt``)."""

    def __init__(self) -> None:
        self._installed = False
        self._previous = None
        self._holding = False
        self._pending: tuple | None = None

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            # None: the handler was not installed from Python; the default is the closest
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
            self._installed = False

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """A step that a Ctrl-C must not cut: an interruption inside it is delivered after it (not
        at all when the step itself raises: that error stops the run anyway)."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        pending, self._pending = self._pending, None
        if pending is not None:
            self._deliver(*pending)

    def _on_sigint(self, signum, frame) -> None:
        if self._holding:
            self._pending = (signum, frame)
        else:
            self._deliver(signum, frame)

    def _deliver(self, signum, frame) -> None:
        if callable(self._previous):
            self._previous(signum, frame)
        elif self._previous != signal.SIG_IGN:
            raise KeyboardInterrupt
