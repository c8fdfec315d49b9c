"""sha256 of a file, streamed in fixed-size chunks (memory stays flat whatever the file's size)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

__all__ = ["CHUNK", "sha256_file"]

CHUNK = 4 << 20


def sha256_file(path: Path, on_chunk: Callable[[int], object] | None = None) -> str:
    """The hex sha256 of ``path``'s content; ``on_chunk`` gets each chunk's length once it is hashed."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            if on_chunk is not None:
                on_chunk(len(chunk))
    return h.hexdigest()
