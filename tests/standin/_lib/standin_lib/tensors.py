"""Hand-written safetensors files (no third-party package) and their validation."""

from __future__ import annotations

import hashlib
import json
import random
import struct
from pathlib import Path

DTYPE_SIZES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
}
TORCH_TO_ST = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "int8": "I8", "fp8": "F8_E4M3"}


class SafetensorError(Exception):
    """Named like the real one so tracebacks read ``safetensors_rust.SafetensorError``."""


SafetensorError.__module__ = "safetensors_rust"


def pseudo_random(seed: str, size: int) -> bytes:
    """Deterministic bytes: the same inputs give byte-identical checkpoints."""
    rng = random.Random(hashlib.sha256(seed.encode()).digest())
    step = 16 << 20  # randbytes of more than ~256 MiB overflows a C int
    return b"".join(rng.randbytes(min(step, size - off)) for off in range(0, size, step))


def safetensors_bytes(
    tensors: list[tuple[str, str, list[int]]], *, seed: str, metadata: dict[str, str] | None = None
) -> bytes:
    """Serialize ``(name, dtype, shape)`` tensors filled with deterministic data."""
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, dtype, shape in tensors:
        n = DTYPE_SIZES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + pseudo_random(seed, offset)


def read_header(path: Path) -> dict[str, dict]:
    """Validate a safetensors file the way the Rust loader does and return its header."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorError("Error while deserializing header: HeaderTooSmall")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise SafetensorError("Error while deserializing header: HeaderTooLarge")
        if 8 + n > size:
            raise SafetensorError("Error while deserializing header: InvalidHeaderLength")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SafetensorError("Error while deserializing header: InvalidHeaderDeserialization") from None
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        end = max(end, int(info["data_offsets"][1]))
    if 8 + n + end != size:
        raise SafetensorError("Error while deserializing header: MetadataIncompleteBuffer")
    return header
