"""Run one argv the way a Cog server can live with, and leave nothing of it behind.

* The step runs under a small supervisor process (see ``supervisor.py``) that owns its whole
  process tree: if this process dies, however it dies, the supervisor stops the tree; when the
  step's main process exits, whatever it left behind (a ``setsid`` daemon holding the output pipe
  included) is stopped and the step is over.
* The step's stdout+stderr come through one pipe, read by a thread: secrets are masked in the raw
  byte stream (``redactor.py``), then it is split into lines (``\\n`` or ``\\r``), decoded leniently,
  stripped of control characters and cut at a maximum length, and handed over in bounded batches.
* The caller's thread re-emits each line (Cog captures only Python's own output), waits in short
  steps so an injected ``CancelationException`` (or ``KeyboardInterrupt``) lands, and prints a
  heartbeat when the step is quiet (``heartbeat.py``). On any ``BaseException``, timeout included,
  the tree is terminated, then killed.
* ``locks``: lock files the step's tree holds for as long as any of it lives; a run that finds one
  held waits for the leftover of an earlier, killed run to go, and never runs beside it.
"""

from __future__ import annotations

import collections
import fcntl
import os
import queue
import re
import select
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from trtllm_builder.errors import LeftoverError, StepFailed, StepKilled, StepTimeout
from trtllm_builder.plan.argv import display
from trtllm_builder.redactor import StreamRedactor
from trtllm_builder.run.heartbeat import EVERY_S, FIRST_S, Heartbeat
from trtllm_builder.run.supervisor import Supervisor, holders
from trtllm_builder.secrets import mask

__all__ = ["HEARTBEAT", "MAX_LINE_BYTES", "TAIL_LINES", "RunResult", "run_step"]

MAX_LINE_BYTES = 8192
TAIL_LINES = 40
HEARTBEAT = (FIRST_S, EVERY_S)
LEFTOVER_WAIT_S = 60.0
_BATCHES = 64
_BATCH_LINES = 2048
_POLL_S = 0.1
_AFTER_EXIT_S = 2.0
_SPLIT_RE = re.compile(rb"[\r\n]")
_CTRL_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")
_CTRL_B = re.compile(rb"[\x00-\x1f\x7f]")

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
    peak_rss_bytes: int | None = None  # the step's process tree, sampled (see heartbeat.py)
    output_bytes: int | None = None  # in the output dir when the step ended


# --- reading the output --------------------------------------------------------------------------


class _Reader(threading.Thread):
    """Reads the pipe until end-of-file or :meth:`stop`; puts lists of finished lines, then ``None``."""

    def __init__(self, fd: int, secrets: Sequence[str], name: str) -> None:
        super().__init__(name=f"{name}-output", daemon=True)
        self.fd = fd
        self.secrets = tuple(s for s in secrets if s)
        self.redactor = StreamRedactor(self.secrets)
        self.batches: queue.Queue[list[str] | None] = queue.Queue(maxsize=_BATCHES)
        self._halt = threading.Event()
        self._buf = bytearray()
        self._cut = 0
        self._batch: list[str] = []

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        try:
            while True:
                ready, _, _ = select.select([self.fd], [], [], 0.2)
                if not ready:
                    if self._halt.is_set():
                        break
                    continue
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    break
                self._split(self.redactor.feed(chunk))
                self._put()
                if self._halt.is_set() and not select.select([self.fd], [], [], 0)[0]:
                    break
        except OSError:
            pass
        finally:
            self._split(self.redactor.flush())
            if self._buf or self._cut:
                self._finish()
            self._put()
            self._put_item(None)

    def _split(self, data: bytes) -> None:
        parts = _SPLIT_RE.split(data)
        for piece in parts[:-1]:
            self._add(piece)
            if self._buf or self._cut:
                self._finish()
            if len(self._batch) >= _BATCH_LINES:
                self._put()
        self._add(parts[-1])

    def _add(self, piece: bytes) -> None:
        room = MAX_LINE_BYTES - len(self._buf)
        if len(piece) <= room:
            self._buf += piece
        else:
            self._buf += piece[: max(room, 0)]
            self._cut += len(piece) - max(room, 0)

    def _finish(self) -> None:
        raw = bytes(self._buf)
        text = raw.decode("utf-8", errors="replace")
        if _CTRL_B.search(raw):
            text = _CTRL_RE.sub("", text.replace("\t", "    "))
        if self.secrets:
            text = mask(text, self.secrets)  # a secret broken up by escape sequences within a line
        line = text.rstrip()
        if self._cut:
            line += f" ... [{self._cut} bytes cut]"
        self._batch.append(line)
        self._buf.clear()
        self._cut = 0

    def _put(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self._put_item(batch)

    def _put_item(self, item: list[str] | None) -> None:
        while True:
            try:
                self.batches.put(item, timeout=0.2)
                return
            except queue.Full:
                if self._halt.is_set():
                    return  # nobody reads any more


# --- locks held by the step's tree ---------------------------------------------------------------


def _hold_locks(paths: Sequence[Path], name: str, note: Callable[[str], None], secrets: Sequence[str]) -> list[IO[str]]:
    """Open and lock each of ``paths``; wait (in short steps) while a leftover of an earlier run holds one."""
    held: list[IO[str]] = []
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            fh: IO[str] = path.open("w")
            held.append(fh)
            deadline: float | None = None
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    pass
                now = time.monotonic()
                if deadline is None:
                    deadline = now + LEFTOVER_WAIT_S
                    who = _describe(holders(path))
                    note(mask(f"[{name}] waiting for processes of an earlier run of this step to stop{who}", secrets))
                elif now > deadline:
                    who = _describe(holders(path))
                    raise LeftoverError(
                        mask(
                            f"step `{name}`: processes left by an earlier, killed run of this step still hold "
                            f"{path}{who}; stop them (kill <pid>) and run again",
                            secrets,
                        )
                    )
                time.sleep(0.2)
    except BaseException:
        for fh in held:
            fh.close()
        raise
    return held


def _describe(procs: Sequence[tuple[int, str]]) -> str:
    if not procs:
        return ""
    shown = ", ".join(f"{pid} `{cmd[:80]}`" for pid, cmd in procs[:5])
    more = f" and {len(procs) - 5} more" if len(procs) > 5 else ""
    return f" (pid {shown}{more})"


# --- the step ------------------------------------------------------------------------------------


def run_step(
    argv: Sequence[str],
    *,
    name: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    secrets: Sequence[str] = (),
    timeout: float | None = None,
    emit: Callable[[str], None] = print,
    note: Callable[[str], None] | None = None,
    tail_lines: int = TAIL_LINES,
    grace_s: float = 5.0,
    output_dir: Path | None = None,
    locks: Sequence[Path] = (),
    heartbeat: tuple[float, float] = HEARTBEAT,
) -> RunResult:
    """Run ``argv`` (never through a shell) and stream its output through ``emit``.

    ``note`` (default ``emit``) gets the runner's own lines: heartbeats, "stopping ...", what was
    left behind. ``output_dir`` is measured for heartbeats and the result; ``heartbeat`` is
    (first after, then every) seconds of silence. Raises :class:`StepFailed` (or
    :class:`StepTimeout` / :class:`StepKilled`) with the step name, the redacted command, the exit
    code and the last ``tail_lines`` lines.
    """
    note = note or emit
    shown = display(argv, secrets)
    held = _hold_locks(locks, name, note, secrets)
    try:
        try:
            sup = Supervisor(
                argv,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                hold=[fh.fileno() for fh in held],
                grace_s=grace_s,
            )
        except OSError as exc:
            reason = f"step `{name}` could not start: {exc.strerror or exc}"
            raise StepFailed(name, shown, None, [], reason=reason) from exc
        try:
            return _follow(sup, name, shown, secrets, timeout, emit, note, tail_lines, grace_s, output_dir, heartbeat)
        finally:
            sup.close()
    finally:
        for fh in held:
            fh.close()


def _follow(
    sup: Supervisor,
    name: str,
    shown: str,
    secrets: Sequence[str],
    timeout: float | None,
    emit: Callable[[str], None],
    note: Callable[[str], None],
    tail_lines: int,
    grace_s: float,
    output_dir: Path | None,
    heartbeat: tuple[float, float],
) -> RunResult:
    reader = _Reader(sup.output_fd, secrets, name)
    reader.start()
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    lines = seen = 0
    beat = Heartbeat(name, output_dir=output_dir, first_s=heartbeat[0], every_s=heartbeat[1])
    start = beat.start
    prefix = f"[{name}] "
    timed_out = False
    eof = False
    exited_at: float | None = None

    def take(batch: list[str] | None) -> None:
        nonlocal lines, eof
        if batch is None:
            eof = True
            return
        lines += len(batch)
        tail.extend(batch)
        for line in batch:
            emit(prefix + line)

    try:
        while True:
            if eof:  # the output is over: what is left to wait for is the exit event, which wakes us at once
                sup.wait(_POLL_S)
            else:
                try:
                    take(reader.batches.get(timeout=_POLL_S))
                    while not eof:  # drain what is ready without waiting
                        take(reader.batches.get_nowait())
                except queue.Empty:
                    pass
            now = time.monotonic()
            if lines != seen:
                seen = lines
                beat.output(now)
            sup.events()
            if sup.error is not None:
                raise StepFailed(name, shown, None, [], reason=f"step `{name}` could not start: {sup.error}")
            if sup.exit is not None:
                if exited_at is None:
                    exited_at = now
                    left = sup.exit.get("leftovers") or []
                    if left:
                        who = _describe(left)
                        what = f"the step exited; stopped {len(left)} processes it left behind{who}"
                        note(mask(prefix + what, secrets))
                if eof or now - exited_at > _AFTER_EXIT_S:
                    break  # something outside the tree holds the pipe: the step is over anyway
            elif sup.gone:
                sup.kill()  # the step got SIGKILL (PR_SET_PDEATHSIG); what else is in its group goes now
                raise StepFailed(
                    name, shown, None, list(tail),
                    reason=f"step `{name}` lost its supervisor process (exit {sup.proc.returncode}); it was stopped",
                )  # fmt: skip
            if timeout is not None and now - start > timeout:
                timed_out = True
                break
            beat.sample(sup.proc.pid if sup.step_pid else None, now)
            if beat.due(now):
                note(beat.beat(sup.proc.pid, now))
    except BaseException:
        note(f"{prefix}stopping: terminating the step's process group")
        sup.stop(grace_s)
        raise
    finally:
        if sup.exit is None:
            sup.stop(grace_s)
        reader.stop()
        deadline = time.monotonic() + 5
        while not eof and time.monotonic() < deadline:  # lines printed while stopping belong to the tail
            try:
                take(reader.batches.get(timeout=0.05))
            except queue.Empty:
                if not reader.is_alive():
                    break
        reader.join(timeout=1)
        if not reader.is_alive():
            os.close(sup.output_fd)
        # else: something outside the tree still holds the pipe; the reader thread (a daemon) ends with it
    duration = time.monotonic() - start
    exit_info = sup.exit or {}
    peak = max(beat.peak_rss, int(exit_info.get("maxrss") or 0)) or None
    if timed_out:
        raise StepTimeout(
            name,
            shown,
            exit_info.get("returncode"),
            list(tail),
            reason=f"step `{name}` timed out after {timeout:g} s and was stopped",
            hint="raise the step's `timeout` if the build is just slow",
        )
    rc = int(exit_info.get("returncode", -signal.SIGKILL))
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
    return RunResult(rc, duration, tuple(tail), lines, peak, beat.output_bytes())
