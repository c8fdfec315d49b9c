"""Run one argv the way a Cog server can live with.

* The child's stdout+stderr are read through one pipe by a reader thread and re-emitted
  from Python line by line as they arrive (Cog captures only Python's own output).
* Lines are decoded leniently, stripped of control characters and cut at a maximum length,
  and handed over through a bounded queue: memory stays bounded whatever the child prints.
* The caller's thread waits in short steps, so an injected ``CancelationException`` (or
  ``KeyboardInterrupt``) lands; on any ``BaseException``, timeout included, the child's
  whole process group is terminated, then killed.
* Secrets never leave: every emitted line and the kept tail are redacted.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .argv import display, redact
from .errors import StepFailed, StepKilled, StepTimeout

__all__ = ["RunResult", "run_step", "terminate_group"]

MAX_LINE_BYTES = 8192
TAIL_LINES = 40
_QUEUE_LINES = 1024
_POLL_S = 0.1
_CTRL_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")
_EOF = object()

OOM_HINT = (
    "the process was killed with SIGKILL, most often by the kernel's out-of-memory killer: "
    "give the machine more RAM, lower `workers`, use `load_by_shard`/`load_model_on_cpu` for convert, "
    "or build with fewer parallel ranks"
)


DISK_HINT = (
    "the step ran out of disk space (or hit a file-size limit) while writing: free space on the "
    "work dir's disk, or put the work dir and TMPDIR on a larger one, and run again (finished steps "
    "are reused from the step cache)"
)
_DISK_RE = re.compile(r"No space left on device|Disk quota exceeded|File too large|ENOSPC|EFBIG")


def _hint(tail: Sequence[str]) -> str | None:
    return DISK_HINT if any(_DISK_RE.search(line) for line in tail) else None


@dataclass(frozen=True)
class RunResult:
    returncode: int
    duration_s: float
    tail: tuple[str, ...]
    lines: int


def _clean(raw: bytes, secrets: Sequence[str]) -> str:
    text = raw.decode("utf-8", errors="replace")
    text = _CTRL_RE.sub("", text.replace("\t", "    "))
    return redact(text, secrets).rstrip()


def _reader(stream: int, out: queue.Queue[object], secrets: Sequence[str]) -> None:
    """Split the byte stream into bounded lines (``\\n`` or ``\\r``), pushing each to ``out``."""
    buf = bytearray()
    cut = 0
    try:
        while True:
            chunk = os.read(stream, 65536)
            if not chunk:
                break
            start = 0
            for m in re.finditer(rb"[\r\n]", chunk):
                piece = chunk[start : m.start()]
                start = m.end()
                room = MAX_LINE_BYTES - len(buf)
                buf += piece[: max(room, 0)]
                cut += max(len(piece) - max(room, 0), 0)
                if buf or cut:
                    line = _clean(bytes(buf), secrets)
                    if cut:
                        line += f" ... [{cut} bytes cut]"
                    out.put(line)
                buf.clear()
                cut = 0
            piece = chunk[start:]
            room = MAX_LINE_BYTES - len(buf)
            buf += piece[: max(room, 0)]
            cut += max(len(piece) - max(room, 0), 0)
        if buf or cut:
            line = _clean(bytes(buf), secrets)
            out.put(line + (f" ... [{cut} bytes cut]" if cut else ""))
    except OSError:
        pass
    finally:
        out.put(_EOF)


def terminate_group(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """SIGTERM the child's process group, wait up to ``grace_s`` in short steps, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    # Kill the group even when the leader is gone: its children may still hold on.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def run_step(
    argv: Sequence[str],
    *,
    name: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    secrets: Sequence[str] = (),
    timeout: float | None = None,
    emit: Callable[[str], None] = print,
    tail_lines: int = TAIL_LINES,
    grace_s: float = 5.0,
) -> RunResult:
    """Run ``argv`` (never through a shell) and stream its output through ``emit``.

    Raises :class:`StepFailed` (or :class:`StepTimeout` / :class:`StepKilled`) with the
    step name, the redacted command, the exit code and the last ``tail_lines`` lines.
    """
    shown = display(argv, secrets)
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    lines = 0
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so the whole tree can be stopped
        )
    except OSError as exc:
        raise StepFailed(name, shown, None, [], reason=f"step `{name}` could not start: {exc.strerror or exc}") from exc
    stdout = proc.stdout
    if stdout is None:  # pragma: no cover - stdout=PIPE always sets it
        terminate_group(proc, grace_s)
        raise StepFailed(name, shown, None, [], reason=f"step `{name}` has no output pipe")
    q: queue.Queue[object] = queue.Queue(maxsize=_QUEUE_LINES)
    reader = threading.Thread(
        target=_reader, args=(stdout.fileno(), q, tuple(secrets)), name=f"{name}-output", daemon=True
    )
    reader.start()
    timed_out = False
    leader_exit: float | None = None
    try:
        eof = False
        while not eof:
            try:
                item = q.get(timeout=_POLL_S)
            except queue.Empty:
                item = None
            if item is _EOF:
                eof = True
            elif isinstance(item, str):
                lines += 1
                tail.append(item)
                emit(f"[{name}] {item}")
            if timeout is not None and time.monotonic() - start > timeout:
                timed_out = True
                break
            if leader_exit is None and proc.poll() is not None:
                leader_exit = time.monotonic()
            elif leader_exit is not None and time.monotonic() - leader_exit > 2.0:
                # The step exited but something it started still holds its output open: stop it.
                emit(f"[{name}] the step exited; stopping processes it left behind")
                terminate_group(proc, grace_s)
                leader_exit = float("inf")
        while not timed_out and proc.poll() is None:
            # Output closed but the process lives on (it closed its stdout); keep waiting in short steps.
            if timeout is not None and time.monotonic() - start > timeout:
                timed_out = True
                break
            time.sleep(_POLL_S)
    except BaseException:
        emit(f"[{name}] stopping: terminating the step's process group")
        terminate_group(proc, grace_s)
        raise
    finally:
        if timed_out or proc.poll() is None:
            terminate_group(proc, grace_s)
        reader.join(timeout=2)
        stdout.close()
    duration = time.monotonic() - start
    if timed_out:
        raise StepTimeout(
            name,
            shown,
            proc.returncode,
            list(tail),
            reason=f"step `{name}` timed out after {timeout:g} s and was stopped",
            hint="raise the step's `timeout` if the build is just slow",
        )
    rc = proc.returncode
    if rc < 0:
        sig = signal.Signals(-rc)
        cls = StepKilled if sig == signal.SIGKILL else StepFailed
        hints = {signal.SIGKILL: OOM_HINT, signal.SIGXFSZ: DISK_HINT}
        raise cls(
            name,
            shown,
            rc,
            list(tail),
            reason=f"step `{name}` was killed by {sig.name}",
            hint=hints.get(sig) or _hint(tail),
        )
    if rc != 0:
        raise StepFailed(name, shown, rc, list(tail), hint=_hint(tail))
    return RunResult(rc, duration, tuple(tail), lines)
