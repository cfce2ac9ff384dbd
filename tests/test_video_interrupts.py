"""InterruptGuard: a SIGINT inside hold() waits for the step's end; elsewhere it is delivered at once."""

from __future__ import annotations

import signal
import threading

import pytest

from defr.video.interrupts import InterruptGuard


@pytest.fixture(autouse=True)
def default_sigint():
    """Python's own handler, whatever the test runner was started with (background runs ignore SIGINT)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_sigint_inside_a_step_is_delivered_when_the_step_ends():
    done = []
    with InterruptGuard() as guard, pytest.raises(KeyboardInterrupt):
        with guard.hold():
            signal.raise_signal(signal.SIGINT)
            done.append("first write")
            done.append("second write")
        done.append("after the step")
    assert done == ["first write", "second write"]


def test_a_sigint_outside_a_step_is_delivered_at_once():
    with InterruptGuard(), pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
        pytest.fail("not interrupted")


def test_a_step_that_raises_keeps_its_error():
    with InterruptGuard() as guard, pytest.raises(OSError, match="disk full"), guard.hold():
        signal.raise_signal(signal.SIGINT)
        raise OSError("disk full")


def test_the_previous_handler_is_restored_and_called():
    calls = []
    signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
    with InterruptGuard() as guard:
        with guard.hold():
            signal.raise_signal(signal.SIGINT)
            assert calls == []
        assert calls == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is not guard._on_sigint
    signal.raise_signal(signal.SIGINT)
    assert calls == [signal.SIGINT, signal.SIGINT]


def test_an_ignored_sigint_stays_ignored():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with InterruptGuard() as guard, guard.hold():
        signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_outside_the_main_thread_the_guard_does_nothing():
    errors = []

    def worker():
        try:
            with InterruptGuard() as guard, guard.hold():
                pass
        except BaseException as e:  # noqa: BLE001 - reported to the test's thread
            errors.append(e)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert errors == [] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
