"""Checking values against annotations: dataclass fields (configs read from files) and JSON numbers.

A config rebuilt from a file's header (``DEFRConfig.from_dict``) or a detections / results JSON
file can hold a value of the wrong type that Python would carry along silently (``64.0`` for an
int, ``"22"`` or ``true`` for a number). These checks refuse them with the field's name.
"""

from __future__ import annotations

import dataclasses
import numbers
import reprlib
import types
import typing
from typing import Any, Union

from defr.errors import ConfigError


def check_field_types(obj: Any) -> None:
    """ConfigError naming the first field of dataclass ``obj`` whose value does not match its annotation
    (int, float, bool, str, None, unions, list / tuple / dict of those, nested dataclasses)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if not _matches(value, hints[f.name]):
            raise ConfigError(
                f"{type(obj).__name__}.{f.name} must be {_describe(hints[f.name])}, "
                f"got {_short(value)} ({type(value).__name__})"
            )


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 2, 4, 4


def _short(value: Any) -> str:
    """``repr(value)`` in at most ~200 characters: YAML aliases nest a billion list items in a few lines, and
    their full repr did not end (round-5 probe)."""
    text = _REPR.repr(value)
    return text if len(text) <= 200 else f"{text[:200]}..."


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (list, tuple, dict):
        return isinstance(value, hint)
    if origin in (list, tuple):
        if not isinstance(value, origin):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, hint)
    return True  # annotations this checker does not know (paths, tensors): not checked


def _describe(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def json_numbers(value: Any, where: str, integers: bool = False, error: type[Exception] = ConfigError) -> Any:
    """``value`` unchanged if it is a number or a (nested) list / tuple of numbers: real numbers (ints,
    floats, numpy's), not booleans or strings; ``error`` (a ConfigError) naming ``where`` otherwise.
    ``integers``: only whole numbers (``22`` or ``22.0``). The one walk over nested numbers."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
            continue
        if isinstance(item, bool) or not isinstance(item, numbers.Real):  # numpy's bool_ is no Real
            raise error(f"{where} is not a numeric array: {item!r} ({type(item).__name__}) is not a number")
        if integers and not float(item).is_integer():
            raise error(f"{where} must be whole numbers, got {item!r}")
    return value
