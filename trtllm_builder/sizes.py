"""Sizes as users write them (``500G``, ``1.5T``, ``800M``, ``2GiB``): cache bounds and disk budgets."""

from __future__ import annotations

__all__ = ["parse_size"]

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``500G``, ``1.5T``, ``800M``, ``2GiB`` or a byte count; ``ValueError`` names the problem."""
    raw = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = raw[-1:] if raw[-1:] in _UNITS else ""
    try:
        value = float(raw[: len(raw) - len(unit)])
    except ValueError:
        raise ValueError(f"{text!r} is not a size; write e.g. 500G, 800M or 1.5T") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{text!r}: a size must be a positive number")
    return int(value * _UNITS[unit])
