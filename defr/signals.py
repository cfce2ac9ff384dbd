"""The one place ``defr`` installs signal handlers (a leaf: imports nothing from ``defr``; checked).

``kill PID``, a job scheduler's time limit, ``docker stop`` and torchrun's agent all send SIGTERM.
By default it ends the process at once: no ``finally`` block runs, so a file being written stays
behind under its temporary name. Three ways to take a signal, all here:

- ``sigterm_as_interrupt()`` (every command, through ``one_line_errors``): SIGTERM raises ``Interrupted``
  (a ``KeyboardInterrupt``) exactly as Ctrl-C does: temporaries are removed, the files of the last finished
  step stay, and the command exits as interrupted (128 + the signal).
- ``InterruptGuard`` (``defr video``): SIGINT and SIGTERM at frame boundaries; one that arrives inside
  ``hold()`` (a frame being written to its outputs) is delivered when the step ends.
- ``on_signals(handler)`` / ``keep_handler(signum)`` (``defr serve``): a handler that only sets a flag,
  and a handler kept across a library (Ray) that installs its own.

Python runs a signal handler between two bytecodes of the main thread, whatever it is doing; when
that is a finalizer or a weakref callback (the garbage collector), the ``KeyboardInterrupt`` is
printed as "Exception ignored" and lost. ``sigterm_as_interrupt`` therefore raises it again when its
block ends normally after a SIGTERM: a terminated command never exits as if nobody had asked it to stop.
Outside the main thread Python delivers no signals and may set no handler: there all of these do nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM taken as a Ctrl-C; ``signum`` says which (the exit code is 128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _restore(signum: int, previous) -> None:
    # None: the handler was not installed from Python; the default is the closest
    if previous is None:
        previous = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
    signal.signal(signum, previous)


@contextmanager
def on_signals(handler: Callable[[int], None], signums: tuple[int, ...] = SIGNALS) -> Iterator[None]:
    """While inside, each of ``signums`` calls ``handler(signum)``; the previous handlers are restored on exit."""
    previous = {s: signal.signal(s, lambda s, _frame: handler(s)) for s in (signums if _main_thread() else ())}
    try:
        yield
    finally:
        for signum, old in previous.items():
            _restore(signum, old)


@contextmanager
def keep_handler(signum: int) -> Iterator[None]:
    """A Python handler of ``signum`` set before the block is set again after it (a library inside, such as
    ``ray.init``, installs its own); the default is left to the library (its cleanup then replaces it)."""
    mine = signal.getsignal(signum) if _main_thread() else None
    try:
        yield
    finally:
        if callable(mine):
            signal.signal(signum, mine)


@contextmanager
def sigterm_as_interrupt() -> Iterator[list[int]]:
    """While inside, SIGTERM raises ``Interrupted`` (once: a second signal while the interrupted work cleans
    up is ignored). Yields the list of signals received. The previous handler is restored on exit."""
    received: list[int] = []

    def handler(signum: int) -> None:
        if not received:
            received.append(signum)
            raise Interrupted(signum)

    with on_signals(handler, (signal.SIGTERM,)):
        yield received
    if received:  # the block ended normally: its KeyboardInterrupt was swallowed (module docstring)
        raise Interrupted(received[0])


class InterruptGuard:
    """While entered, SIGINT and SIGTERM go through this guard (main thread only).

    Delivery calls the handler that was installed before when it is a Python function (Python's
    default SIGINT handler raises ``KeyboardInterrupt``), keeps an ignored signal ignored, and
    raises ``Interrupted`` for a signal whose default would end the process.
    """

    def __init__(self) -> None:
        self._previous: dict[int, object] = {}
        self._holding = False
        self._pending: tuple | None = None

    def __enter__(self) -> InterruptGuard:
        if _main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            _restore(signum, previous)
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
