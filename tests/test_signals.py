"""defr.signals, the one place signals are taken: InterruptGuard (a SIGINT or SIGTERM inside hold() waits for the
step's end; elsewhere it is delivered at once), one_line_errors' SIGTERM, the serve handlers."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from defr.signals import InterruptGuard

INTERRUPTS = Path(__file__).resolve().parents[1] / "defr" / "signals.py"


@pytest.fixture(autouse=True)
def default_sigint():
    """Python's own handler, whatever the test runner was started with (background runs ignore SIGINT)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous_term = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGINT, previous)
    signal.signal(signal.SIGTERM, previous_term)


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
    assert signal.getsignal(signal.SIGINT) is not guard._on_signal
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


def test_a_sigterm_inside_a_step_waits_for_its_end_and_the_handler_before_is_called():
    """Issue 18 #7: SIGTERM goes through the guard like SIGINT (a Python handler installed before is kept)."""
    calls = []
    signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    with InterruptGuard() as guard:
        with guard.hold():
            signal.raise_signal(signal.SIGTERM)
            assert calls == []
        assert calls == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is not guard._on_signal


def test_a_default_sigterm_is_taken_as_a_ctrl_c():
    """With SIGTERM's default (end the process), the guard raises ``Interrupted`` (a KeyboardInterrupt) at the
    step's end instead. In a child process: without the guard the default would end the test runner."""
    code = f"""
import importlib.util, signal
spec = importlib.util.spec_from_file_location("interrupts", {str(INTERRUPTS)!r})
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
steps = []
try:
    with m.InterruptGuard() as guard, guard.hold():
        signal.raise_signal(signal.SIGTERM)
        steps.append("finished the step")
except KeyboardInterrupt as e:
    print(type(e).__name__, e.signum == signal.SIGTERM, steps)
print(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (out.returncode, out.stderr)
    assert out.stdout.split("\n")[:2] == ["Interrupted True ['finished the step']", "True"]


def test_a_signal_held_with_deliver_false_is_dropped():
    with InterruptGuard() as guard:
        with guard.hold(deliver=False):
            signal.raise_signal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt), guard.hold():
            signal.raise_signal(signal.SIGINT)


def test_an_interrupted_command_says_what_it_left_in_one_line():
    """defr-export's note (what the output folder holds) comes through the one ``one_line_errors``: one line on
    stderr, exit 128 + the signal (it had its own SIGTERM handler and message before)."""
    import click
    from click.testing import CliRunner

    from defr.clikit import one_line_errors

    @click.command()
    def stopped() -> None:
        with one_line_errors(interrupted="out holds the previous export"):
            signal.raise_signal(signal.SIGTERM)

    r = CliRunner().invoke(stopped, [])
    assert r.exit_code == 128 + signal.SIGTERM
    assert r.output == "interrupted (SIGTERM), out holds the previous export\n"


def test_a_sigterm_that_a_library_turns_into_a_bare_ctrl_c_still_exits_143():
    """Round-5 probe: SIGTERM during ``defr video --ray``'s ray.wait said "interrupted (SIGINT)" and 130: Ray
    raised a bare KeyboardInterrupt in place of the ``Interrupted`` our handler raised."""
    import click
    from click.testing import CliRunner

    from defr.clikit import one_line_errors

    @click.command()
    def stopped() -> None:
        with one_line_errors():
            try:
                signal.raise_signal(signal.SIGTERM)
            except KeyboardInterrupt:
                raise KeyboardInterrupt from None  # what Ray's wait does with it

    r = CliRunner().invoke(stopped, [])
    assert r.exit_code == 128 + signal.SIGTERM and r.output == "interrupted (SIGTERM)\n"


def test_serve_handlers_are_set_and_restored_here():
    from defr.signals import keep_handler, on_signals

    before = signal.getsignal(signal.SIGTERM)
    got = []
    with on_signals(got.append):
        signal.raise_signal(signal.SIGTERM)
        mine = signal.getsignal(signal.SIGTERM)
        with keep_handler(signal.SIGTERM):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # what a library such as ray.init does
        assert signal.getsignal(signal.SIGTERM) is mine
    assert got == [signal.SIGTERM] and signal.getsignal(signal.SIGTERM) is before
