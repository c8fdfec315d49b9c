"""sha256 of a file, streamed in fixed-size chunks (memory stays flat whatever the file's size)."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["CHUNK", "sha256_file"]

CHUNK = 4 << 20


def sha256_file(path: Path) -> str:
    """The hex sha256 of ``path``'s content."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
