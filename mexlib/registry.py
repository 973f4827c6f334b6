"""One rule for every lookup by name: a known name gives its entry, an unknown one raises a
``ValueError`` that names every valid choice (the data sets, architectures, heads, methods,
settings, exit policies, profiles...)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def unknown(kind: str, name: Any, valid: Iterable, plural: str | None = None) -> ValueError:
    """The error for an unknown ``name`` of ``kind`` (``"unknown head 'x'; valid heads: ..."``)."""
    return ValueError(f"unknown {kind} {name!r}; valid {plural or kind + 's'}: {', '.join(map(str, valid))}")


def lookup(table: Mapping[Any, T], name: Any, kind: str, plural: str | None = None) -> T:
    """``table[name]``, or :func:`unknown`'s error naming the table's keys."""
    try:
        return table[name]
    except (KeyError, TypeError):
        raise unknown(kind, name, table, plural) from None


def check(name: Any, valid: Iterable, kind: str, plural: str | None = None) -> None:
    """Raise :func:`unknown`'s error unless ``name`` is one of ``valid``."""
    valid = list(valid)
    if name not in valid:
        raise unknown(kind, name, valid, plural)


def check_all(names: Iterable, valid: Iterable, kind: str, plural: str | None = None) -> None:
    """Raise, naming every unknown one at once, unless each of ``names`` is one of ``valid``."""
    valid = list(valid)
    wrong = [n for n in names if n not in valid]
    if wrong:
        raise ValueError(f"unknown {plural or kind + 's'} {sorted(map(str, wrong))}; valid {plural or kind + 's'}: "
                         f"{', '.join(map(str, valid))}")


__all__ = ["check", "check_all", "lookup", "unknown"]
