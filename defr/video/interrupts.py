"""Ctrl-C and SIGTERM at frame boundaries.

A video run writes each frame to up to three outputs (annotated video, frames JSONL, events
JSONL). An interruption raised between two of those writes would leave the video one frame ahead
of the JSONL files. ``InterruptGuard.hold()`` marks such a step: a SIGINT or SIGTERM that arrives
inside it is delivered when the step ends, one that arrives elsewhere is delivered at once.

SIGTERM (what ``kill``, systemd, Docker and Kubernetes send) is handled like a Ctrl-C: unless a
Python handler was installed for it before, it raises ``Interrupted`` (a ``KeyboardInterrupt``)
instead of ending the process on the spot, so the run finalises its outputs the same way.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM taken as a Ctrl-C; ``signum`` says which (the exit code is 128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class InterruptGuard:
    """While entered, SIGINT and SIGTERM go through this guard (main thread only: elsewhere Python
    delivers no signals and the guard does nothing).

    Delivery calls the handler that was installed before when it is a Python function (Python's
    default SIGINT handler raises ``KeyboardInterrupt``), keeps an ignored signal ignored, and
    raises ``Interrupted`` for a signal whose default would end the process.
    """

    def __init__(self) -> None:
        self._previous: dict[int, object] = {}
        self._holding = False
        self._pending: tuple | None = None

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            # None: the handler was not installed from Python; the default is the closest
            if previous is None:
                previous = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            signal.signal(signum, previous)
        self._previous = {}

    @contextlib.contextmanager
    def hold(self, deliver: bool = True) -> Iterator[None]:
        """A step that an interruption must not cut: one that arrives inside it is delivered after
        it (not at all when the step itself raises: that error stops the run anyway).

        deliver=False: an interruption inside the step is dropped (for the step that ends the run:
        finalising the outputs)."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        pending, self._pending = self._pending, None
        if pending is not None and deliver:
            self._deliver(*pending)

    def _on_signal(self, signum, frame) -> None:
        if self._holding:
            self._pending = (signum, frame)
        else:
            self._deliver(signum, frame)

    def _deliver(self, signum, frame) -> None:
        previous = self._previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise Interrupted(signum)
