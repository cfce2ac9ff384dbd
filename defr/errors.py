"""The project's error base: every error ``defr`` raises on purpose derives from ``DefrError``.

Commands turn a ``DefrError`` (and an ``OSError``: a file that cannot be read or written) into a
one-line message; anything else is a bug and surfaces with its traceback. Each error class also
keeps the builtin base it had before (``ValueError`` for bad input, ``RuntimeError`` for a
runtime that cannot run), so ``except ValueError`` in callers keeps working.
"""

from __future__ import annotations


class DefrError(Exception):
    """Base of every error ``defr`` raises about its input, files, configuration or environment."""


class ConfigError(DefrError, ValueError):
    """An argument or configuration value that is not allowed; the message says which and what is."""


class DefrDeprecationWarning(DefrError, DeprecationWarning):
    """A ``defr`` API that still works but will go; the message names what to use instead. The test
    suite turns it into an error (pyproject.toml), so the project never calls its own deprecated API."""
