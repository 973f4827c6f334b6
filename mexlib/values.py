"""Checks of a configuration's plain values: numbers of one type each (so equal configurations
hash equally), in range and finite, flags that are True or False, names that are text; each error
names the field, the value and what is allowed (:mod:`mexlib.config` calls them on construction)."""

from __future__ import annotations

import math
import numbers


def canonical_numbers(obj, floats: tuple[str, ...], ints: tuple[str, ...]) -> None:
    """Store numbers as one type each, so equal configurations hash equally (1 and 1.0); a value
    that is not a number of that kind (text, a bool, NaN, infinity, 2.5 for a count) raises,
    naming the field, the value and what is allowed."""
    for name in floats:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        object.__setattr__(obj, name, float(value))
    for name in ints:
        value = getattr(obj, name)
        if value is None:
            continue
        if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
                or float(value) != int(value)):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        object.__setattr__(obj, name, int(value))


def check_range(name: str, value, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> None:
    """Raise unless ``low <= value <= high`` (``<`` where open), naming the field and the range."""
    if value is None:
        return
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        left = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        right = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        allowed = (f"in {left}, {right}" if low is not None and high is not None
                   else f"{'>' if low_open else '>='} {low:g}" if low is not None
                   else f"{'<' if high_open else '<='} {high:g}")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_flags(obj, names: tuple[str, ...]) -> None:
    """Each of ``names`` is True or False (not 1, "yes" or "maybe"), naming the field otherwise."""
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")


def check_text(obj, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a name (text), got {value!r}")


__all__ = ["canonical_numbers", "check_flags", "check_range", "check_text"]
