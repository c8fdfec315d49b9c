"""The build log: every line in a file, and a bounded, rate-limited stream for the user.

A step may print millions of lines (a converter's progress redrawn with ``\\r``, a verbose
trtllm-build). Cog keeps a prediction's logs in memory and sends all of them with every webhook,
so forwarding each line makes every webhook larger than the last (300k lines: gigabytes of webhook
traffic), and a terminal or CI log cannot keep up either. So:

* every line (pipeline messages and step output, secrets already masked) goes to ``build.log``
  in the work dir, which the pipeline packs beside the manifest;
* the pipeline's own messages and the runner's notes (heartbeats, "stopping ...") are always
  forwarded;
* a step's output is forwarded in full up to :attr:`LogLimits.burst_lines` lines per step, then
  at :attr:`LogLimits.rate_per_s` lines a second; the whole build forwards at most
  :attr:`LogLimits.max_lines` output lines and :attr:`LogLimits.max_bytes` bytes. While lines are
  held back a note says how many (at most every :attr:`LogLimits.note_every_s`), and the step's
  end says how many of its lines were shown.

Nothing a user needs is lost: a failed step's last lines travel in ``StepFailed`` itself (the
runner keeps its own tail), and the full log is in the work dir (kept after a failure) and in the
archive.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from trtllm_builder.secrets import mask

__all__ = ["BUILD_LOG_NAME", "BuildLog", "LogLimits"]

BUILD_LOG_NAME = "build.log"
_FLUSH_S = 1.0


@dataclass(frozen=True)
class LogLimits:
    burst_lines: int = 500  # per step, forwarded before the rate limit applies
    rate_per_s: float = 5.0  # per step, after the burst
    bucket: int = 20  # lines the rate limit lets through at once
    max_lines: int = 10_000  # step output lines forwarded per build, in all
    max_bytes: int = 2 << 20  # and bytes
    note_every_s: float = 15.0


class _StepCount:
    def __init__(self, name: str, now: float, bucket: int) -> None:
        self.name = name
        self.seen = 0
        self.shown = 0
        self.held_since_note = 0
        self.tokens = float(bucket)
        self.refilled = now
        self.last_note = float("-inf")  # the first held-back line is noted at once


class BuildLog:
    """The pipeline's log sink (``__call__``) and the runner's output sink (:meth:`output`)."""

    def __init__(
        self,
        forward: Callable[[str], object],
        *,
        secrets: Sequence[str] = (),
        limits: LogLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._forward = forward
        self.secrets = [s for s in secrets if s]
        self.limits = limits or LogLimits()
        self._clock = clock
        self._fh: IO[str] | None = None
        self._early: list[str] = []
        self.path: Path | None = None
        self._last_flush = clock()
        self._shown_lines = 0
        self._shown_bytes = 0
        self._step: _StepCount | None = None

    # --- the file -------------------------------------------------------------------------------------

    def open(self, path: Path, *, append: bool = False) -> None:
        """Start writing to ``path`` (replaced, or appended to); lines logged before are written first."""
        self._fh = path.open("a" if append else "w", encoding="utf-8", errors="replace", buffering=1 << 20)
        self.path = path
        for line in self._early:
            self._fh.write(line + "\n")
        self._early.clear()
        self._fh.flush()

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()
        self._last_flush = self._clock()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _write(self, line: str, now: float) -> None:
        if self._fh is None:
            if len(self._early) < 10_000:
                self._early.append(line)
            return
        self._fh.write(line + "\n")
        if now - self._last_flush >= _FLUSH_S:
            self.flush()

    # --- lines ----------------------------------------------------------------------------------------

    def __call__(self, line: str) -> None:
        """A message of the pipeline or a note of the runner: kept and always shown."""
        line = mask(line, self.secrets)
        self._write(line, self._clock())
        self._forward(line)

    def output(self, line: str) -> None:
        """A line of a step's output (the runner masked it already): kept; shown within the limits."""
        now = self._clock()
        if self._fh is not None and now - self._last_flush < _FLUSH_S:
            self._fh.write(line + "\n")  # the common case, inline: this runs for every line
        else:
            self._write(line, now)
        step = self._step or self._step_for(line, now)
        step.seen += 1
        if self._allowed(step, len(line), now):
            step.shown += 1
            self._shown_lines += 1
            self._shown_bytes += len(line) + 1
            self._forward(line)
            return
        step.held_since_note += 1
        if now - step.last_note >= self.limits.note_every_s:
            self._note(step, now)

    def start_output(self, name: str) -> None:
        """The output of step ``name`` follows (its own per-step burst and rate)."""
        self._step = _StepCount(name, self._clock(), self.limits.bucket)

    def end_output(self) -> None:
        """The step's output ended: say how much of it was not shown, if any."""
        step, self._step = self._step, None
        if step is None or step.shown == step.seen:
            return
        line = (
            f"[{step.name}] {step.seen - step.shown} of {step.seen} output lines were not shown "
            f"(the log is bounded); every line is kept in {BUILD_LOG_NAME} (work dir; packed in the archive)"
        )
        self._write(line, self._clock())
        self._forward(line)

    def _step_for(self, line: str, now: float) -> _StepCount:
        if self._step is None:  # output without start_output: count it under its [name] prefix
            name = line[1 : line.index("]")] if line.startswith("[") and "]" in line else "step"
            self._step = _StepCount(name, now, self.limits.bucket)
        return self._step

    def _allowed(self, step: _StepCount, size: int, now: float) -> bool:
        lim = self.limits
        if self._shown_lines >= lim.max_lines or self._shown_bytes + size > lim.max_bytes:
            return False
        if step.seen <= lim.burst_lines:
            return True
        tokens = step.tokens + (now - step.refilled) * lim.rate_per_s
        step.refilled = now
        if tokens >= 1:
            step.tokens = min(float(lim.bucket), tokens) - 1
            return True
        step.tokens = tokens
        return False

    def _note(self, step: _StepCount, now: float) -> None:
        lim = self.limits
        why = (
            "the build's log budget is spent"
            if self._shown_lines >= lim.max_lines or self._shown_bytes >= lim.max_bytes
            else f"more than {lim.rate_per_s:g} lines/s"
        )
        held = step.held_since_note
        line = f"[{step.name}] ... {held} lines not shown ({why}); every line is kept in {BUILD_LOG_NAME}"
        step.held_since_note = 0
        step.last_note = now
        self._write(line, now)
        self._forward(line)
