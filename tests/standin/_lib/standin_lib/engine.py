"""Engine files: a short header (like a TensorRT plan's) then incompressible bytes."""

from __future__ import annotations

import os
from pathlib import Path

from .common import ENGINE_MAGIC, trt_version, trtllm_version

HEADER_SIZE = 64


def engine_bytes(compute_cap: str) -> bytes:
    """``STANDIN_ENGINE_BYTES`` (default 64 KiB) bytes; the header records the build GPU."""
    size = int(os.environ.get("STANDIN_ENGINE_BYTES", str(64 * 1024)))
    header = f"standin trt={trt_version()} trtllm={trtllm_version()} sm={compute_cap}\n".encode()
    header = (ENGINE_MAGIC + header).ljust(HEADER_SIZE, b"\0")[:HEADER_SIZE]
    return header + os.urandom(max(0, size - HEADER_SIZE))


def read_engine_header(path: Path) -> dict[str, str]:
    """The fields of a stand-in engine header ({} for anything else)."""
    with path.open("rb") as f:
        head = f.read(HEADER_SIZE)
    if not head.startswith(ENGINE_MAGIC):
        return {}
    text = head[len(ENGINE_MAGIC) :].split(b"\n", 1)[0].decode("ascii", "replace")
    fields = {}
    for part in text.split()[1:]:
        key, _, value = part.partition("=")
        fields[key] = value
    return fields
