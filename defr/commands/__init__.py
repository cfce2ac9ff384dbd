"""Command modules: each parses options, calls the library, and turns ``DefrError`` / ``OSError`` into one line.

The only modules that import click. ``defr/cli.py`` registers them lazily (``defr --help`` stays instant);
the options several commands share are in ``defr.commands.options``.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import click

from defr.errors import DefrError
from defr.signals import sigterm_as_interrupt


@contextmanager
def one_line_errors(exit_codes: Mapping[type[BaseException], int] | None = None) -> Iterator[None]:
    """Project errors and file-system errors become ``click.ClickException`` (one line, exit 1, or the
    code of the first class of ``exit_codes`` the error is an instance of). Inside, SIGTERM is handled
    like Ctrl-C (``defr.signals``); either ends the command with one line and exit code 128 + the
    signal (130 for Ctrl-C, 143 for SIGTERM), as any program's. Anything else is a bug and keeps its
    traceback."""
    received: list[int] = []
    try:
        with sigterm_as_interrupt() as received:
            yield
    except (DefrError, OSError) as e:
        error = click.ClickException(str(e))
        error.exit_code = next((code for cls, code in (exit_codes or {}).items() if isinstance(e, cls)), 1)
        raise error from None
    except KeyboardInterrupt as e:
        # a video run's StreamInterrupted names the signal its own guard took (defr.video.interrupts)
        signum = received[0] if received else getattr(e, "signum", signal.SIGINT)
        click.echo(f"interrupted ({signal.Signals(signum).name})", err=True)
        raise SystemExit(128 + signum) from None


def int_list(ctx, param, value: str) -> tuple[int, ...]:
    """A click callback: ``"1,8"`` → ``(1, 8)``."""
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
