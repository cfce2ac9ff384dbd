"""SIGTERM handled like Ctrl-C (a leaf: imports nothing from ``defr``).

``kill PID``, a job scheduler's time limit, ``docker stop`` and torchrun's agent all send SIGTERM.
By default it ends the process at once: no ``finally`` block runs, so a file being written stays
behind under its temporary name. Inside ``sigterm_as_interrupt()`` a SIGTERM raises
``KeyboardInterrupt`` instead, exactly as Ctrl-C does: temporaries are removed, the files of the
last finished step stay, and the command exits as interrupted.

Python runs a signal handler between two bytecodes of the main thread, whatever it is doing; when
that is a finalizer or a weakref callback (the garbage collector), the ``KeyboardInterrupt`` is
printed as "Exception ignored" and lost. The block therefore raises it again when it ends normally
after a SIGTERM: a terminated command never exits as if nobody had asked it to stop.
(``defr video`` defers both signals to frame boundaries instead: ``defr.video.interrupts``.)
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def sigterm_as_interrupt() -> Iterator[list[int]]:
    """While inside, SIGTERM raises ``KeyboardInterrupt`` (once: a second signal while the interrupted
    work cleans up is ignored). Yields the list of signals received. In a thread other than the main
    one (where Python delivers no signals) nothing changes. The previous handler is restored on exit."""
    received: list[int] = []

    def handler(signum, frame) -> None:
        if not received:
            received.append(signum)
            raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    if received:  # the block ended normally: its KeyboardInterrupt was swallowed (module docstring)
        raise KeyboardInterrupt(f"signal {signal.Signals(received[0]).name}")
