"""Argument types for the command lines (``python -m mexlib.sweep``, ``benchmarks/*.py``): a bad
value ends in argparse's usage error naming what is valid, never in a traceback.

    parser.add_argument("--steps", type=positive_int, default=60)
    parser.add_argument("--seeds", type=int_list)           # "0,1,2" -> [0, 1, 2]
    parser.add_argument("--warmup", type=non_negative_int)
"""

from __future__ import annotations

import argparse


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ({what})") from None


def positive_int(text: str) -> int:
    """A whole number of at least 1 (steps, repeats, workers, threads, cores)."""
    value = _int(text, "1 or more")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is too small: 1 or more")
    return value


def non_negative_int(text: str) -> int:
    """A whole number of at least 0 (warm-up steps, loader workers)."""
    value = _int(text, "0 or more")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is too small: 0 or more")
    return value


def positive_float(text: str) -> float:
    """A number above 0 (a time budget in minutes)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (above 0)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value:g} is too small: above 0")
    return value


def int_list(text: str) -> list[int]:
    """Comma-separated whole numbers (``0,1,2``), at least one: seeds."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError("give at least one whole number, comma-separated (e.g. 0,1,2)")
    values = []
    for item in items:
        try:
            values.append(int(item))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{item!r} is not a whole number; give whole numbers, comma-separated (e.g. 0,1,2)") from None
    return values


__all__ = ["int_list", "non_negative_int", "positive_float", "positive_int"]
