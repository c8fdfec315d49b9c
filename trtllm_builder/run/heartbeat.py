"""A line for a step that has gone quiet, with what is cheap to measure about it.

``trtllm-build`` works silently for minutes while TensorRT optimizes, and Cog's server (coglet)
sends a logs webhook only when a new line arrives: without a new line, the step's last lines wait
unseen. So after :data:`FIRST_S` seconds without output, and every :data:`EVERY_S` seconds of
further silence, the runner prints (from the thread that owns the log)::

    [build] still running: 2m30s, no output for 50 s, output dir 3.1 GiB, peak RSS 21.0 GiB, GPU memory 40.2 GiB

* output dir: bytes of the regular files under the step's output dir (links not followed);
* peak RSS: the largest sum of the resident memory of the step's process tree seen so far
  (sampled from ``/proc`` every :data:`SAMPLE_S` seconds), or the largest single process's own
  peak (``VmHWM``) if that is higher;
* GPU memory: memory in use on every GPU ``nvidia-smi`` lists (device-wide: in a container the
  driver rarely names our processes), left out where ``nvidia-smi`` does not answer.

The last figures (peak RSS, output bytes, measured once more when the step ends) go into the
manifest's step record.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from trtllm_builder.progress import format_bytes, format_duration
from trtllm_builder.run.supervisor import tree_memory

__all__ = ["EVERY_S", "FIRST_S", "SAMPLE_S", "Heartbeat", "dir_bytes", "gpu_memory_used"]

FIRST_S = 20.0
EVERY_S = 30.0
SAMPLE_S = 2.0
_NVIDIA_SMI_TIMEOUT_S = 5.0
_gpu_unavailable = False


def dir_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links are not followed; unreadable parts count 0)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def gpu_memory_used() -> int | None:
    """Bytes in use on all GPUs, or None where ``nvidia-smi`` is missing or fails (then not asked again)."""
    global _gpu_unavailable
    exe = None if _gpu_unavailable else shutil.which("nvidia-smi")
    if exe is None:
        _gpu_unavailable = True
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=_NVIDIA_SMI_TIMEOUT_S, check=True, stdin=subprocess.DEVNULL,
        ).stdout  # fmt: skip
        values = [float(v) for v in out.split() if v.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        _gpu_unavailable = True
        return None
    return int(sum(values) * 2**20) if values else None


class Heartbeat:
    """When a heartbeat is due, and its figures. Call :meth:`sample` often, :meth:`due` then :meth:`line`."""

    def __init__(
        self,
        name: str,
        *,
        output_dir: Path | None,
        first_s: float = FIRST_S,
        every_s: float = EVERY_S,
        sample_s: float = SAMPLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.output_dir = output_dir
        self.first_s = first_s
        self.every_s = every_s
        self.sample_s = sample_s
        self.start = clock()
        self.peak_rss = 0
        self._sampled = float("-inf")
        self._last_beat: float | None = None
        self._silence_from = self.start

    def output(self, now: float) -> None:
        """The step printed something: silence starts again."""
        self._silence_from = now
        self._last_beat = None

    def sample(self, root_pid: int | None, now: float) -> None:
        if root_pid is None or now - self._sampled < self.sample_s:
            return
        self._sampled = now
        total, single_peak = tree_memory(root_pid)
        self.peak_rss = max(self.peak_rss, total, single_peak)

    def due(self, now: float) -> bool:
        if self._last_beat is None:
            return now - self._silence_from >= self.first_s
        return now - self._last_beat >= self.every_s

    def beat(self, root_pid: int | None, now: float) -> str:
        """The heartbeat line as of ``now`` (and mark it sent)."""
        self._last_beat = now
        self._sampled = float("-inf")
        self.sample(root_pid, now)
        parts = [f"still running: {format_duration(now - self.start)}"]
        parts.append(f"no output for {format_duration(now - self._silence_from)}")
        if self.output_dir is not None:
            parts.append(f"output dir {format_bytes(dir_bytes(self.output_dir), binary=True)}")
        if self.peak_rss:
            parts.append(f"peak RSS {format_bytes(self.peak_rss, binary=True)}")
        gpu = gpu_memory_used()
        if gpu is not None:
            parts.append(f"GPU memory {format_bytes(gpu, binary=True)}")
        return f"[{self.name}] " + ", ".join(parts)

    def output_bytes(self) -> int | None:
        return dir_bytes(self.output_dir) if self.output_dir is not None and self.output_dir.is_dir() else None
