"""Sizes as users write them (``500G``, ``1.5T``, ``800M``, ``2GiB``): cache bounds and disk budgets."""

from __future__ import annotations

import os

from trtllm_builder.errors import ConfigError

__all__ = ["parse_size", "size_from_env"]

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


def size_from_env(name: str) -> int | None:
    """``$name`` as bytes, or None when unset; a ``ConfigError`` naming the variable when it is not a size."""
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise ConfigError(f"${name}: {exc}") from None
