"""SIGTERM handled like Ctrl-C (a leaf: imports nothing from ``defr``).

``kill PID``, a job scheduler's time limit, ``docker stop`` and torchrun's agent all send SIGTERM.
By default it ends the process at once: no ``finally`` block runs, so a file being written stays
behind under its temporary name. Inside ``terminate_as_interrupt()`` a SIGTERM raises
``KeyboardInterrupt`` instead, exactly as Ctrl-C does: temporaries are removed, the files of the
last finished step stay, and the command ends with click's "Aborted!" (exit 1).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises ``KeyboardInterrupt`` (main thread only: elsewhere Python delivers
    no signals and this does nothing); the previous handler is restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
