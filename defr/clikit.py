"""What every command shares, ``defr``'s (``defr.commands``) and ``defr-export``'s (``defr.export.cli``): errors
as one line, interruptions as one line and 128 + the signal, and the ``--mask-mode`` option.

The bottom of the command layer: it imports click and leaves only, so ``defr.export.cli`` needs nothing
from ``defr.commands`` (checked by ``tests/test_architecture.py``).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import click

from defr.choices import DEFAULT_MASK_MODE, MASK_MODES
from defr.errors import DefrError
from defr.signals import Interrupted, sigterm_as_interrupt


@contextmanager
def one_line_errors(
    exit_codes: Mapping[type[BaseException], int] | None = None, interrupted: str | None = None
) -> Iterator[None]:
    """Project errors and file-system errors become ``click.ClickException`` (one line, exit 1, or the
    code of the first class of ``exit_codes`` the error is an instance of). Inside, SIGTERM is handled
    like Ctrl-C (``defr.signals``); either ends the command with one line, ``interrupted (SIGTERM)``
    followed by ``interrupted`` (what the command left behind) when given, and exit code 128 + the
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
    except (Exception, KeyboardInterrupt) as e:
        if (interrupt := caused_by_interrupt(e)) is None:
            raise
        # SIGTERM here, or a video run's guard (StreamInterrupted), name their signal; a bare one is Ctrl-C unless
        # a SIGTERM came first (Ray's ray.wait turns the Interrupted our handler raises into a bare one)
        signum = interrupt.signum if isinstance(interrupt, Interrupted) else received[0] if received else signal.SIGINT
        note = f", {interrupted}" if interrupted else ""
        click.echo(f"interrupted ({signal.Signals(signum).name}){note}", err=True)
        raise SystemExit(128 + signum) from None


def caused_by_interrupt(e: BaseException | None) -> KeyboardInterrupt | None:
    """The Ctrl-C (or SIGTERM, ``defr.signals.Interrupted``) that ``e`` is or was caused by, else None. One
    inside a class body being imported reaches us as Python's ``RuntimeError: Error calling __set_name__
    ...`` (torch._dynamo's dataclasses), its cause the interrupt."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


class OutputFolder(click.Path):
    """``click.Path(file_okay=False)`` for an output folder that refuses an empty argument: click turns ``''``
    (an unset shell variable, ``--out "$DIR"``) into ``.``, and the outputs landed in the current folder."""

    def __init__(self, **kwargs) -> None:
        super().__init__(file_okay=False, **kwargs)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("is empty: give a folder (. for the current one)", param, ctx)
        return super().convert(value, param, ctx)


def mask_mode_option(default: str | None = None, help: str | None = None) -> Callable:  # noqa: A002 (click's name)
    """``--mask-mode``, one of ``MASK_MODES``; default None: the file's own, else the library's default."""
    return click.option(
        "--mask-mode",
        type=click.Choice(MASK_MODES),
        default=default,
        show_default=default is not None,
        help=help
        or "How a pair's boxes mask the CLS attention: hard (the paper) or released (the released code's +1 bias). "
        f"A checkpoint runs in either (default {DEFAULT_MASK_MODE}); an exported file keeps its own.",
    )
