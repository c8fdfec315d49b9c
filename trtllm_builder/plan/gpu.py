"""This machine's NVIDIA GPUs, as ``nvidia-smi`` reports them.

An engine runs only on the compute capability it was built for, so both the builder
(recording it) and ``inspect`` (comparing it) need the local GPUs. Detection never
raises: no ``nvidia-smi``, a failing one or garbage output all mean "no GPU seen".
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from dataclasses import dataclass

__all__ = ["NVIDIA_SMI_QUERY", "GpuInfo", "detect_gpus", "parse_nvidia_smi_csv", "prefetch_gpus"]

logger = logging.getLogger(__name__)

NVIDIA_SMI_QUERY = (
    "nvidia-smi",
    "--query-gpu=index,name,compute_cap,memory.total",
    "--format=csv,noheader,nounits",
)


@dataclass(frozen=True)
class GpuInfo:
    """One GPU. ``compute_capability`` is ``"major.minor"`` such as ``"9.0"``."""

    index: int
    name: str
    compute_capability: str
    memory_mib: int | None = None


class _Prefetch:
    """One detection started early in a thread (the CLI starts it while it imports and plans)."""

    def __init__(self) -> None:
        self.result: list[GpuInfo] = []
        self.thread = threading.Thread(target=self._run, name="nvidia-smi", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.result = _query(timeout=15.0)


_prefetched: _Prefetch | None = None


def prefetch_gpus() -> None:
    """Start the next :func:`detect_gpus` now, in the background (``nvidia-smi`` takes ~0.1 s)."""
    global _prefetched
    if _prefetched is None:
        _prefetched = _Prefetch()


def detect_gpus(*, timeout: float = 15.0) -> list[GpuInfo]:
    """Run ``nvidia-smi`` from ``PATH`` and return the GPUs it lists.

    Returns an empty list when ``nvidia-smi`` is absent, fails, hangs past
    ``timeout`` seconds or prints nothing usable (drivers older than 510 do not know
    ``compute_cap``): callers treat that as "no GPU visible". The answer of a
    :func:`prefetch_gpus` started earlier is used once, when there is one.
    """
    global _prefetched
    pending, _prefetched = _prefetched, None
    if pending is not None:
        pending.thread.join(timeout)
        if not pending.thread.is_alive():
            return list(pending.result)
    return _query(timeout=timeout)


def _query(*, timeout: float) -> list[GpuInfo]:
    exe = shutil.which(NVIDIA_SMI_QUERY[0])
    if exe is None:
        logger.debug("nvidia-smi not found on PATH: no GPUs detected")
        return []
    argv = [exe, *NVIDIA_SMI_QUERY[1:]]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.debug("nvidia-smi could not run: %s", exc)
        return []
    if proc.returncode != 0:
        logger.debug("nvidia-smi exited %s: %s", proc.returncode, proc.stderr.strip()[-500:])
        return []
    return parse_nvidia_smi_csv(proc.stdout)


def parse_nvidia_smi_csv(text: str) -> list[GpuInfo]:
    """Parse ``index, name, compute_cap, memory.total`` lines; skip malformed ones."""
    gpus: list[GpuInfo] = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 4:
            continue
        # A GPU name could contain a comma; index is first, the two numbers are last.
        index_s, cap, mem_s = fields[0], fields[-2], fields[-1]
        name = ", ".join(fields[1:-2])
        try:
            index = int(index_s)
        except ValueError:
            continue
        if not _looks_like_capability(cap):
            continue
        try:
            memory: int | None = int(float(mem_s))
        except ValueError:  # "[N/A]" on some virtualised GPUs
            memory = None
        gpus.append(GpuInfo(index=index, name=name, compute_capability=cap, memory_mib=memory))
    return gpus


def _looks_like_capability(text: str) -> bool:
    major, dot, minor = text.partition(".")
    return bool(dot) and major.isdigit() and minor.isdigit()
