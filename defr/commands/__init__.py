"""Command modules: each parses options, calls the library, and turns ``DefrError`` / ``OSError`` into one line.

The only modules that import click. ``defr/cli.py`` registers them lazily (``defr --help`` stays instant);
the options several commands share are in ``defr.commands.options``; what they share with ``defr-export``
(``one_line_errors``, ``--mask-mode``) in ``defr.clikit``.
"""

from __future__ import annotations

import click

from defr.clikit import one_line_errors

__all__ = ["int_list", "one_line_errors"]  # one_line_errors is shared with defr-export (defr.clikit)


def int_list(ctx, param, value: str) -> tuple[int, ...]:
    """A click callback: ``"1,8"`` → ``(1, 8)``."""
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
