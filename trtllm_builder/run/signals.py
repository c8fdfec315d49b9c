"""SIGTERM and SIGHUP handled like Ctrl-C, in the CLI and in the Cog worker.

A stop signal unwinds the build the way Ctrl-C (``KeyboardInterrupt``) and Cog's cancel do: the
runner stops the running step's whole process tree, the archive writer removes its partial file,
the predictor deletes the prediction's directory; then the process exits with 128 + the signal
number (143 for SIGTERM, 129 for SIGHUP; 130 for Ctrl-C).

* CLI (:func:`cli_signals`): Python runs signal handlers in the main thread, which is the build's
  thread, so the handler raises :class:`~trtllm_builder.errors.Interrupted` there at once.
* Cog worker (:func:`install_worker_signals`, from ``setup()``, which coglet runs on the main
  thread): coglet's main thread stays in Rust and never runs Python handlers, and predictions run
  on another thread. So the C-level handler's wakeup fd (``signal.set_wakeup_fd``) is watched by a
  thread of ours, which stops every supervised step at once, raises ``Interrupted`` in the thread
  set by :func:`set_interrupt_target` (the prediction's, as Cog delivers its own cancel), waits for
  it to unwind, and exits the worker.

A second stop signal while unwinding is reported and otherwise ignored: the unwinding is bounded
(the step gets SIGKILL after its grace period), and interrupting the clean-up would leave partial
files behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

from trtllm_builder.errors import Interrupted
from trtllm_builder.run.supervisor import stop_all

__all__ = ["STOP_SIGNALS", "cli_signals", "install_worker_signals", "set_interrupt_target"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_UNWIND_WAIT_S = 60.0


def _say(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def cli_signals() -> Iterator[None]:
    """While the CLI runs: SIGTERM/SIGHUP raise ``Interrupted``, SIGINT ``KeyboardInterrupt``, once each run."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (a test calling main() from a thread)
        return
    stopping = False

    def handler(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            _say(f"trtllm-builder: {signal.Signals(signum).name} again: still stopping, please wait")
            return
        stopping = True
        stop_all()  # the steps start stopping now, whatever the main thread is doing
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Interrupted(signum)

    watched = (signal.SIGINT, *STOP_SIGNALS)
    previous = {s: signal.signal(s, handler) for s in watched}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# --- the Cog worker ------------------------------------------------------------------------------------

_build_thread: int | None = None
_build_lock = threading.Lock()


def set_interrupt_target(thread_id: int | None) -> None:
    """The thread a stop signal interrupts (the prediction's, while it runs), or None."""
    global _build_thread
    with _build_lock:
        _build_thread = thread_id


def _interrupt(thread_id: int, signum: int) -> None:
    """Raise ``Interrupted(signum)`` in ``thread_id`` at its next bytecode (as Cog delivers a cancel)."""

    def init(self: Interrupted) -> None:
        Interrupted.__init__(self, signum)

    exc = type(f"Interrupted{signal.Signals(signum).name}", (Interrupted,), {"__init__": init})
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc))


def _on_worker_signal(signum: int, exit_: Callable[[int], object]) -> None:
    name = signal.Signals(signum).name
    with _build_lock:
        target = _build_thread
    if target is None:
        _say(f"trtllm-builder: received {name} while idle; exiting")
        exit_(128 + signum)
        return
    _say(f"trtllm-builder: received {name}: stopping the build (its steps' processes, partial outputs), then exiting")
    stop_all()
    _interrupt(target, signum)
    deadline = time.monotonic() + _UNWIND_WAIT_S
    while time.monotonic() < deadline:
        with _build_lock:
            if _build_thread is None:
                break
        time.sleep(0.05)
    time.sleep(0.5)  # let the failed prediction's status reach the server, if it still listens
    exit_(128 + signum)


def install_worker_signals(*, exit_: Callable[[int], object] = os._exit) -> bool:
    """Watch SIGTERM/SIGHUP in a Cog worker (call from the main thread); False if that is not possible."""
    if threading.current_thread() is not threading.main_thread():
        return False
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous = {s: signal.signal(s, lambda _s, _f: None) for s in STOP_SIGNALS}
    try:
        old = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except ValueError:
        old = -2
    if old != -1:  # someone else watches signals this way: leave theirs alone
        if old >= 0:
            signal.set_wakeup_fd(old)
        for s, h in previous.items():
            signal.signal(s, h)
        os.close(read_fd)
        os.close(write_fd)
        return False
    stops = {int(s) for s in STOP_SIGNALS}

    def watch() -> None:
        stopping = False
        while True:
            try:
                data = os.read(read_fd, 64)
            except InterruptedError:
                continue
            except OSError:
                return
            for signum in data:
                if signum not in stops:
                    continue
                if stopping:
                    _say(f"trtllm-builder: {signal.Signals(signum).name} again: still stopping, please wait")
                    continue
                stopping = True
                threading.Thread(
                    target=_on_worker_signal, args=(signum, exit_), name="trtllm-builder-stop", daemon=True
                ).start()

    threading.Thread(target=watch, name="trtllm-builder-signals", daemon=True).start()
    return True
