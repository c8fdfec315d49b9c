"""One small process that owns a step's whole process tree, so that nothing it starts outlives it.

The runner (:class:`Supervisor`) starts ``python -I supervisor.py --control FD ... -- ARGV`` in a
session of its own, and this program starts ``ARGV`` in another session (the step's process group):

* It is a *child subreaper* (``PR_SET_CHILD_SUBREAPER``, Linux >= 3.4, no privilege needed):
  whatever the step starts, a daemon that called ``setsid`` or double-forked included, stays its
  descendant instead of being re-parented to init, so it can be found and stopped. Where prctl is
  refused it tracks descendants by scanning ``/proc`` every poll (best effort).
* It watches its parent through a socket: when the runner's process dies, however it dies
  (``SIGKILL`` included), the socket reads end-of-file and the supervisor stops the whole tree.
  (Not ``PR_SET_PDEATHSIG`` on itself: that fires when the parent *thread* ends, and a Cog worker
  runs predictions on threads.)
* It sets ``PR_SET_PDEATHSIG(SIGKILL)`` on the step (``preexec_fn`` is safe here: this process has
  one thread, unlike a Cog worker), so the step dies even if the supervisor is killed.
* When the step's main process exits, it stops what the step left behind (SIGTERM, ``--grace``
  seconds, SIGKILL) and reports the exit code: a step ends when its process ends, not when a daemon
  closes the output pipe.
* It keeps the ``--hold`` descriptors (lock files) open, and the step inherits them, until every
  process of the tree is gone: a lock held by the tree tells the next build that a leftover lives.

Stdlib only, no package imports: the runner runs this file by path (``python -I``), so it works
whether the package is installed or imported from a source checkout.

Protocol (lines of tab-separated fields on the control socket). Supervisor to runner:
``started PID subreaper|proc-scan``; ``error MESSAGE`` when ARGV cannot start; then ``left PID
CMDLINE`` for each process the step left behind and ``exit RETURNCODE MAXRSS_BYTES``. Runner to
supervisor: ``stop`` (stop the tree now, then report).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the supervisor starts faster without these (it runs once per step)
    from pathlib import Path
    from typing import Any

__all__ = ["SUPERVISOR_FILE", "Supervisor", "alive", "holders", "stop_all", "tree_memory"]

SUPERVISOR_FILE = os.path.realpath(__file__)
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_POLL_S = 0.05
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# --- /proc ------------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int, str, int] | None:
    """(ppid, pgid, state, starttime) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return int(fields[1]), int(fields[2]), fields[0].decode(), int(fields[19])
    except (IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    st = _stat(pid)
    if st is None:
        if not os.path.isdir("/proc"):  # no /proc: ask the kernel (a zombie then counts as alive)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return False
    return st[2] not in ("Z", "X")


def _all_stats() -> dict[int, tuple[int, int, str, int]]:
    out: dict[int, tuple[int, int, str, int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if name.isdigit() and (st := _stat(int(name))) is not None:
            out[int(name)] = st
    return out


def _children(pid: int) -> list[int] | None:
    """Children of ``pid`` from ``/proc/<pid>/task/*/children``; None where the kernel lacks the file."""
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                kids.extend(int(k) for k in fh.read().split())
        except FileNotFoundError:
            if tid == str(pid):
                return None
        except (OSError, ValueError):
            continue
    return kids


def descendants(root: int, *, scan: bool = False) -> list[int]:
    """Every live descendant of ``root`` (not ``root`` itself), zombies excluded.

    Walks the ``children`` files (cheap: only this tree is read); ``scan`` (or a kernel without
    them) reads every process's ``stat`` instead, which is exact even while processes come and go.
    """
    if not scan:
        found: list[int] = []
        todo = [root]
        while todo:
            kids = _children(todo.pop())
            if kids is None:
                return descendants(root, scan=True)
            for k in kids:
                if k not in found and alive(k):
                    found.append(k)
                    todo.append(k)
        return found
    stats = _all_stats()
    by_parent: dict[int, list[int]] = {}
    for pid, (ppid, _pgid, state, _start) in stats.items():
        if state not in ("Z", "X"):
            by_parent.setdefault(ppid, []).append(pid)
    out: list[int] = []
    todo = [root]
    while todo:
        for k in by_parent.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def _status_kib(pid: int, *keys: str) -> list[int]:
    values = dict.fromkeys(keys, 0)
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                key, _, rest = line.partition(b":")
                name = key.decode(errors="replace")
                if name in values:
                    values[name] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return [values[k] for k in keys]


def tree_memory(root: int) -> tuple[int, int]:
    """(sum of the current RSS, largest single-process peak RSS) over ``root``'s descendants, in bytes."""
    total = peak = 0
    for pid in descendants(root):
        rss, hwm = _status_kib(pid, "VmRSS", "VmHWM")
        total += rss * 1024
        peak = max(peak, hwm * 1024)
    return total, peak


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:200] or "?"


def holders(path: Path) -> list[tuple[int, str]]:
    """Processes (pid, command line) that have ``path`` open; only those this user may inspect."""
    target = os.path.realpath(path)
    found: list[tuple[int, str]] = []
    for name in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{name}/fd/{fd}") == target:
                    found.append((int(name), _cmdline(int(name))))
                    break
            except OSError:
                continue
    return found


# --- the supervisor program ---------------------------------------------------------------------------


_libc: list[ctypes.CDLL] = []


def _load_libc() -> ctypes.CDLL | None:
    if not _libc:
        try:
            _libc.append(ctypes.CDLL(None, use_errno=True))
        except OSError:
            return None
    return _libc[0]


def _prctl(option: int, value: int) -> bool:
    libc = _load_libc()
    try:
        return libc is not None and int(libc.prctl(option, value, 0, 0, 0)) == 0
    except AttributeError:  # no prctl: not Linux
        return False


class _Tree:
    """The step and everything it started, as far as this process can see."""

    def __init__(self, step_pid: int, subreaper: bool) -> None:
        self.step_pid = step_pid
        self.subreaper = subreaper
        self.tracked: dict[int, int] = {}  # pid -> starttime, for hosts without a subreaper
        self.returncode: int | None = None

    def members(self) -> list[int]:
        """Live processes of the tree: our descendants, the step's process group, what was tracked."""
        me = os.getpid()
        pids = set(descendants(me, scan=not self.subreaper))
        for pid, start in list(self.tracked.items()):
            st = _stat(pid)
            if st is None or st[3] != start or st[2] in ("Z", "X"):
                del self.tracked[pid]
            else:
                pids.add(pid)
        if not self.subreaper:  # with one, the step's group are all descendants already
            for pid, (_ppid, pgid, state, _start) in _all_stats().items():
                if pgid == self.step_pid and state not in ("Z", "X"):
                    pids.add(pid)
        pids.discard(me)
        return sorted(pids)

    def track(self) -> None:
        if self.subreaper:
            return
        for pid in descendants(os.getpid(), scan=True):
            st = _stat(pid)
            if st is not None:
                self.tracked.setdefault(pid, st[3])

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.step_pid:
                self.returncode = os.waitstatus_to_exitcode(status)

    def stop(self, grace_s: float) -> list[tuple[int, str]]:
        """SIGTERM every member, wait up to ``grace_s``, SIGKILL the rest; returns what was found."""
        found: dict[int, str] = {}
        signalled: set[int] = set()
        deadline = time.monotonic() + grace_s
        sig = signal.SIGTERM
        while True:
            self.reap()
            members = self.members()
            if not members:
                break
            for pid in members:
                if pid not in found:
                    found[pid] = _cmdline(pid)
                if pid not in signalled or sig == signal.SIGKILL:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, sig)
                    signalled.add(pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.step_pid, sig)
            if sig == signal.SIGTERM and time.monotonic() > deadline:
                sig = signal.SIGKILL
                signalled.clear()
            elif sig == signal.SIGKILL and time.monotonic() > deadline + 10:
                break  # unkillable (D state): give up rather than hang
            time.sleep(_POLL_S)
        self.reap()
        return sorted(found.items())


def _send(ctl: socket.socket, *fields: object) -> None:
    """One event: tab-separated fields on one line (no json: importing it costs start-up time)."""
    line = "\t".join(str(f).replace("\t", " ").replace("\n", " ") for f in fields)
    with contextlib.suppress(OSError):
        ctl.sendall(line.encode("utf-8", "replace") + b"\n")


def _parse(argv: Sequence[str]) -> tuple[int, list[int], float, bool, list[str]]:
    """``--control FD [--hold FD]... [--grace S] [--no-subreaper] -- CMD...`` (no argparse: it costs a
    third of the start-up)."""
    control, hold, grace, subreaper = -1, [], 5.0, True
    args = list(argv)
    while args and args[0] != "--":
        if args[0] == "--no-subreaper":  # track descendants by scanning /proc, as where prctl is refused
            subreaper = False
            del args[0]
            continue
        flag, value = args[0], args[1]
        if flag == "--control":
            control = int(value)
        elif flag == "--hold":
            hold.append(int(value))
        elif flag == "--grace":
            grace = float(value)
        else:
            raise SystemExit(f"trtllm-builder-supervisor: unknown option {flag}")
        del args[:2]
    if control < 0 or not args[1:]:
        raise SystemExit("usage: supervisor.py --control FD [--hold FD]... [--grace S] -- CMD...")
    return control, hold, grace, subreaper, args[1:]


def main(argv: Sequence[str] | None = None) -> None:
    control, hold, grace, want_subreaper, cmd = _parse(sys.argv[1:] if argv is None else argv)
    ctl = socket.socket(fileno=control)
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop_requested.set()

    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, on_signal)
    # wake the loop at once when a child exits (or a signal arrives), instead of at the next poll
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda _s, _f: None)
    _load_libc()  # now, not in the forked child
    subreaper = want_subreaper and _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    me = os.getpid()

    def child_setup() -> None:
        # runs in the forked child of this one-thread process, before exec
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != me:  # the supervisor died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    try:
        child = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, start_new_session=True, pass_fds=tuple(hold), preexec_fn=child_setup
        )
    except (OSError, subprocess.SubprocessError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        _send(ctl, "error", f"{reason}: {cmd[0]}")
        os._exit(0)
    tree = _Tree(child.pid, subreaper)
    _send(ctl, "started", child.pid, "subreaper" if subreaper else "proc-scan")
    parent_gone = False
    leftovers: list[tuple[int, str]] = []
    while True:
        readable, _, _ = select.select([ctl.fileno(), wake_r], [], [], _POLL_S)
        if wake_r in readable:
            with contextlib.suppress(OSError):
                os.read(wake_r, 512)
        if ctl.fileno() in readable:
            try:
                data = ctl.recv(4096)
            except OSError:
                data = b""
            if not data:
                parent_gone = True
            elif b"stop" in data:
                stop_requested.set()
        tree.reap()
        tree.track()
        if parent_gone or stop_requested.is_set():
            tree.stop(grace)
            break
        if tree.returncode is not None:
            leftovers = tree.stop(grace)
            break
    child.returncode = tree.returncode if tree.returncode is not None else -signal.SIGKILL
    if not parent_gone:
        maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        for pid, cmdline in leftovers:
            _send(ctl, "left", pid, cmdline)
        _send(ctl, "exit", child.returncode, maxrss)
    os._exit(0)


# --- the runner's side ----------------------------------------------------------------------------------


_live: weakref.WeakSet[Supervisor] = weakref.WeakSet()


def stop_all() -> None:
    """Ask every live supervisor of this process to stop its tree now (from any thread; for signals)."""
    for sup in list(_live):
        sup.request_stop()


class Supervisor:
    """A running supervisor: its output pipe, its events, and how to stop it."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str] | None,
        hold: Iterable[int] = (),
        grace_s: float = 5.0,
        subreaper: bool = True,
    ) -> None:
        hold = tuple(hold)
        self._ctl, theirs = socket.socketpair()
        read_fd, write_fd = os.pipe()
        # -I -S: no environment, user site or site-packages; the supervisor needs the stdlib only
        cmd = [sys.executable, "-I", "-S", SUPERVISOR_FILE, "--control", str(theirs.fileno()), "--grace", str(grace_s)]
        for fd in hold:
            cmd += ["--hold", str(fd)]
        if not subreaper:
            cmd.append("--no-subreaper")
        try:
            self.proc = subprocess.Popen(
                [*cmd, "--", *argv],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                pass_fds=(theirs.fileno(), *hold),
                start_new_session=True,
            )
        except BaseException:
            os.close(read_fd)
            self._ctl.close()
            raise
        finally:
            os.close(write_fd)
            theirs.close()
        self.output_fd = read_fd
        self._ctl.setblocking(False)
        self._buf = b""
        self._closed = False
        self._lock = threading.Lock()
        self.step_pid: int | None = None
        self.contained: str | None = None
        self.error: str | None = None
        self.exit: dict[str, Any] | None = None
        self._left: list[tuple[int, str]] = []
        _live.add(self)

    def wait(self, timeout: float) -> None:
        """Block until an event (or the socket's end) can be read, at most ``timeout`` seconds."""
        if not self._closed:
            with contextlib.suppress(OSError, ValueError):
                select.select([self._ctl], [], [], timeout)

    def events(self) -> list[dict[str, Any]]:
        """Events that arrived since the last call (non-blocking); also records started/exit/error."""
        out: list[dict[str, Any]] = []
        while not self._closed:
            try:
                data = self._ctl.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                self._closed = True
                break
            self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            kind, *fields = line.decode("utf-8", "replace").split("\t")
            try:
                if kind == "started":
                    self.step_pid, self.contained = int(fields[0]), fields[1]
                elif kind == "error":
                    self.error = fields[0]
                elif kind == "left":
                    self._left.append((int(fields[0]), fields[1]))
                elif kind == "exit":
                    self.exit = {"returncode": int(fields[0]), "maxrss": int(fields[1]), "leftovers": self._left}
                else:
                    continue
            except (IndexError, ValueError):
                continue
            out.append({"event": kind, "fields": fields})
        return out

    @property
    def gone(self) -> bool:
        """The supervisor exited (its socket closed) and every event was read."""
        return self._closed and self.proc.poll() is not None

    def request_stop(self) -> None:
        """Ask the supervisor to stop the tree (returns at once; thread-safe)."""
        with self._lock, contextlib.suppress(OSError):
            self._ctl.send(b"stop\n")

    def stop(self, grace_s: float) -> None:
        """Stop the tree and wait (in short steps, so an interrupt still lands) until it is gone.

        If the supervisor cannot do it in time, kill what can still be found from here.
        """
        self.request_stop()
        deadline = time.monotonic() + grace_s + 10
        while time.monotonic() < deadline:
            self.events()
            if self.gone:
                return
            time.sleep(_POLL_S)
        self.kill()

    def kill(self) -> None:
        """Last resort: SIGKILL the supervisor's tree, the step's group and the supervisor."""
        pids = descendants(self.proc.pid, scan=True)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if self.step_pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.step_pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def close(self) -> None:
        """Release the control socket and reap the supervisor (call once it is gone or killed)."""
        _live.discard(self)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._ctl.close()


if __name__ == "__main__":
    main()
