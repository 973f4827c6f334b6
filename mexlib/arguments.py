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


#: What a yes/no setting (``STRICT=1``, ``MEXLIB_STRICT=yes``) may say, either way, any case.
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def flag(text: str) -> bool:
    """A yes/no setting: 1, true, yes or on; 0, false, no, off or nothing (any case)."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is neither yes ({', '.join(TRUE_WORDS)}) nor no "
                                     f"({', '.join(w for w in FALSE_WORDS if w)} or nothing)")


def device(text: str) -> str:
    """A device this machine has: ``auto``, ``cpu``, ``cuda``, ``cuda:<index>`` or ``mps``."""
    import torch

    valid = "auto, cpu, cuda, cuda:<index> or mps"
    if text == "auto":
        return text
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; valid: {valid}") from None
    if parsed.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device this package trains on; valid: {valid}")
    if parsed.type == "cuda" and not (torch.cuda.is_available()
                                      and (parsed.index or 0) < torch.cuda.device_count()):
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has no MPS device")
    return text


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
