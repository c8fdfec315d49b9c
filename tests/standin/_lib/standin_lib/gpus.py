"""The GPUs the stand-ins pretend to have: ``STANDIN_GPUS``.

Format: ``name:compute_cap:memory_mib`` entries separated by commas, e.g.
``NVIDIA H100 80GB HBM3:9.0:81559,NVIDIA H100 80GB HBM3:9.0:81559``.
Unset: two ``NVIDIA A100-SXM4-80GB`` (8.0, 81920 MiB). ``none``: no driver. Empty: no devices.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

DEFAULT_GPUS = "NVIDIA A100-SXM4-80GB:8.0:81920,NVIDIA A100-SXM4-80GB:8.0:81920"
DRIVER_VERSION = "570.133.20"
CUDA_VERSION = "12.8"

NO_DRIVER_MESSAGE = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)
TORCH_NO_DRIVER = (
    "Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and "
    "installed a driver from http://www.nvidia.com/Download/index.aspx"
)


class NoDriverError(Exception):
    pass


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    compute_cap: str
    memory_mib: int

    @property
    def uuid(self) -> str:
        return f"GPU-5fa7c0de-{self.index:04x}-4a1b-9c2d-{zlib.crc32(self.name.encode()):012x}"

    @property
    def sm(self) -> int:
        major, _, minor = self.compute_cap.partition(".")
        return int(major) * 10 + int(minor or 0)


def gpus() -> list[Gpu]:
    """The configured GPUs; raises NoDriverError for ``STANDIN_GPUS=none``."""
    raw = os.environ.get("STANDIN_GPUS")
    if raw is None:
        raw = DEFAULT_GPUS
    raw = raw.strip()
    if raw.lower() == "none":
        raise NoDriverError(NO_DRIVER_MESSAGE)
    out: list[Gpu] = []
    for i, entry in enumerate(e for e in raw.split(",") if e.strip()):
        parts = entry.strip().split(":")
        if len(parts) != 3:
            raise SystemExit(f"standin: bad STANDIN_GPUS entry {entry!r} (want name:cc:mib)")
        name, cap, mem = parts
        out.append(Gpu(i, name.strip(), cap.strip(), int(mem)))
    return out


def cuda_gpus() -> list[Gpu]:
    """What torch.cuda would see: raises RuntimeError like torch when there is no driver."""
    try:
        found = gpus()
    except NoDriverError:
        raise RuntimeError(TORCH_NO_DRIVER) from None
    if not found:
        raise RuntimeError("No CUDA GPUs are available")
    return found


def current_gpu(rank: int = 0) -> Gpu:
    found = cuda_gpus()
    return found[rank % len(found)]
