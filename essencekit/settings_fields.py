"""Settings declared as dataclass fields with their checks beside their defaults.

Each command's settings (``extraction/settings.py``, ``training/settings.py``) declare a field
as ``declare(default, check)``; :func:`check_fields` runs the checks in declaration order and a
bad value raises :class:`~essencekit.errors.OptionError` naming the parameter (the CLI maps it to
its flag). Imports no torch: the CLI reads the defaults to print ``--help``.
"""

from __future__ import annotations

import math
from dataclasses import field, fields

from .errors import OptionError


def whole_number(low: int, *, optional: bool = False):
    def check(name: str, value) -> None:
        if optional and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise OptionError(f"{name} must be a whole number >= {low}, got {value!r}", parameter=name)

    return check


def finite_number(*, positive: bool = False, high: float | None = None, optional: bool = False):
    def check(name: str, value) -> None:
        if optional and value is None:
            return
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value > 0 if positive else value >= 0) and (high is None or value <= high)
        if not ok:
            bound = ("> 0" if positive else ">= 0") + (f" and <= {high}" if high is not None else "")
            raise OptionError(f"{name} must be a finite number {bound}, got {value!r}", parameter=name)

    return check


def one_of(choices: tuple[str, ...]):
    def check(name: str, value) -> None:
        if value not in choices:
            raise OptionError(f"{name} must be one of {', '.join(choices)}, got {value!r}", parameter=name)

    return check


def true_or_false(name: str, value) -> None:
    if not isinstance(value, bool):
        raise OptionError(f"{name} must be True or False, got {value!r}", parameter=name)


def declare(default, check):
    """A field's default and its check, declared together."""
    return field(default=default, metadata={"check": check})


def check_fields(settings) -> None:
    """Run every declared field's check, in declaration order."""
    for spec in fields(settings):
        check = spec.metadata.get("check")
        if check is not None:
            check(spec.name, getattr(settings, spec.name))
