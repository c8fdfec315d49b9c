"""Progress lines for long transfers (download, pack, upload) that read well in a CI or Cog log.

One line at least every ``interval`` seconds while work goes on, and one at the end; never a line
per chunk, never a carriage return. For example::

    download: 6.2/16.1 GB (38%), 412 MB/s, ETA 24 s
    download: 16.1/16.1 GB (100%) in 39 s, 412 MB/s

Counting and printing are separate: :meth:`ProgressMeter.add` / :meth:`ProgressMeter.set` may be
called from any thread (a downloader's workers), while :meth:`ProgressMeter.tick` prints, and is
called by the thread that owns the log (under Cog, the prediction's thread: what it prints lands
in the prediction's logs). :func:`run_ticking` runs blocking work in a helper thread and ticks
from the calling thread meanwhile, so a cancel delivered to the caller still lands promptly.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["ProgressMeter", "format_bytes", "format_duration", "run_ticking"]

T = TypeVar("T")

DEFAULT_INTERVAL_S = 5.0
_RATE_WINDOW_S = 15.0


def format_bytes(n: float, *, binary: bool = False) -> str:
    """``16.1 GB`` (decimal, as transfer rates are quoted) or ``3.1 GiB`` with ``binary``."""
    step = 1024.0 if binary else 1000.0
    units = ("B", "KiB", "MiB", "GiB", "TiB") if binary else ("B", "kB", "MB", "GB", "TB")
    value = float(n)
    for unit in units:
        if abs(value) < step or unit == units[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= step
    raise AssertionError("unreachable")  # pragma: no cover


def format_duration(seconds: float) -> str:
    """``24 s``, ``2m30s``, ``1h05m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _pair(done: float, total: float) -> str:
    """``6.2/16.1 GB``: both numbers in the unit of the total."""
    scale, unit = 1.0, "B"
    for candidate in ("kB", "MB", "GB", "TB"):
        if total < scale * 1000:
            break
        scale, unit = scale * 1000, candidate
    if unit == "B":
        return f"{done:.0f}/{total:.0f} B"
    return f"{done / scale:.1f}/{total / scale:.1f} {unit}"


class ProgressMeter:
    """Counts bytes of one phase and prints a line when one is due (see the module docstring)."""

    def __init__(
        self,
        phase: str,
        total: int | None,
        log: Callable[[str], object],
        *,
        interval: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.phase = phase
        self.total = total if total and total > 0 else None
        self._log = log
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._done = 0
        self._start = clock()
        self._last_line = self._start
        self._samples: collections.deque[tuple[float, int]] = collections.deque([(self._start, 0)])
        self._finished = False

    @property
    def done(self) -> int:
        with self._lock:
            return self._done

    def add(self, n: int) -> None:
        """``n`` more bytes are done (thread-safe)."""
        with self._lock:
            self._done += n

    def set(self, done: int) -> None:
        """``done`` bytes are done in all (thread-safe); never goes backwards."""
        with self._lock:
            self._done = max(self._done, done)

    def tick(self) -> bool:
        """Print a line if ``interval`` seconds passed since the last one; True if one was printed."""
        now = self._clock()
        if self._finished or now - self._last_line < self._interval:
            return False
        self._last_line = now
        self._log(self.line(now))
        return True

    def finish(self, *, note: str = "") -> None:
        """Print the closing line (once): what was done, in how long, at what average rate."""
        if self._finished:
            return
        self._finished = True
        now = self._clock()
        done = self.done
        elapsed = max(now - self._start, 1e-9)
        amount = _pair(done, self.total) if self.total else format_bytes(done)
        pct = f" ({100 * done / self.total:.0f}%)" if self.total else ""
        line = f"{self.phase}: {amount}{pct} in {format_duration(elapsed)}, {format_bytes(done / elapsed)}/s"
        self._log(line + (f"; {note}" if note else ""))

    def line(self, now: float | None = None) -> str:
        """The progress line as of ``now``."""
        now = self._clock() if now is None else now
        done = self.done
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= _RATE_WINDOW_S:
            self._samples.popleft()
        t0, d0 = self._samples[0]
        rate = (done - d0) / (now - t0) if now > t0 else 0.0
        if not self.total:
            return f"{self.phase}: {format_bytes(done)}, {format_bytes(rate)}/s"
        pct = 100 * done / self.total
        eta = f"ETA {format_duration((self.total - done) / rate)}" if rate > 0 else "ETA unknown (stalled)"
        return f"{self.phase}: {_pair(done, self.total)} ({pct:.0f}%), {format_bytes(rate)}/s, {eta}"


def run_ticking(work: Callable[[], T], tick: Callable[[], object], *, poll_s: float = 0.2, name: str = "work") -> T:
    """Run ``work()`` in a helper thread; call ``tick()`` every ``poll_s`` from this thread until it ends.

    Returns ``work``'s result or re-raises its exception here. An exception raised in this thread
    meanwhile (``KeyboardInterrupt``, Cog's cancel) propagates at once; the helper thread is a
    daemon and is left to finish or fail on its own, so ``work`` should watch a stop flag of its
    caller's if it must stop early.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # handed to the calling thread
            error.append(exc)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(poll_s)
        tick()
    if error:
        raise error[0]
    return result[0]
