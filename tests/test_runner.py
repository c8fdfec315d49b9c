"""The step runner, against real child processes (``sys.executable -c ...``)."""

from __future__ import annotations

import ctypes
import os
import re
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from trtllm_builder.errors import LeftoverError, StepFailed, StepKilled, StepTimeout
from trtllm_builder.run.runner import MAX_LINE_BYTES, run_step


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie counts as gone
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_lines_stream_as_they_arrive(tmp_path: Path) -> None:
    seen: list[tuple[float, str]] = []
    start = time.monotonic()
    run_step(
        py("""
        import time, sys
        print("first", flush=True)
        time.sleep(1.0)
        print("second", file=sys.stderr, flush=True)
        """),
        name="s",
        cwd=tmp_path,
        emit=lambda line: seen.append((time.monotonic() - start, line)),
    )
    assert [line for _, line in seen] == ["[s] first", "[s] second"]
    assert seen[0][0] < 0.8 < seen[1][0]  # the first line was shown before the child finished


def test_failure_carries_name_command_code_and_tail(tmp_path: Path) -> None:
    with pytest.raises(StepFailed) as info:
        run_step(
            py("""
            import sys
            for i in range(100):
                print(f"line {i}")
            print("Traceback: ValueError: bad dtype", file=sys.stderr)
            sys.exit(3)
            """),
            name="convert",
            cwd=tmp_path,
            emit=lambda _: None,
            tail_lines=10,
        )
    err = info.value
    msg = str(err)
    assert err.returncode == 3 and err.step == "convert"
    assert "step `convert` exited with code 3" in msg
    assert "command: " in msg and "-c" in msg
    assert "ValueError: bad dtype" in msg and "line 91" in msg and "line 89" not in msg


def test_secrets_are_redacted_in_output_and_errors(tmp_path: Path) -> None:
    secret = "hf_SECRETSECRETSECRET"
    lines: list[str] = []
    with pytest.raises(StepFailed) as info:
        run_step(
            py("""
            import os, sys
            print("token is", os.environ["HF_TOKEN"])
            sys.exit(1)
            """),
            name="s",
            cwd=tmp_path,
            env={**os.environ, "HF_TOKEN": secret},
            secrets=[secret],
            emit=lines.append,
        )
    assert secret not in "\n".join(lines) and secret not in str(info.value)
    assert "token is **********" in "\n".join(lines)


def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    with pytest.raises(StepTimeout, match=r"timed out after 1 s"):
        run_step(
            py(f"""
            import subprocess, sys, time
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            open({str(pidfile)!r}, "w").write(str(child.pid))
            print("started", flush=True)
            time.sleep(600)
            """),
            name="hang",
            cwd=tmp_path,
            timeout=1.0,
            emit=lambda _: None,
            grace_s=2.0,
        )
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)


def _inject(thread: threading.Thread, exc: type[BaseException]) -> None:
    """Deliver ``exc`` into ``thread`` the way Cog delivers a cancel: at its next bytecode."""
    n = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident or 0), ctypes.py_object(exc))
    assert n == 1


class FakeCancel(BaseException):
    """Stands in for cog.CancelationException (also a BaseException); the real one is tested via the server."""


def test_cancel_exception_stops_step_and_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            run_step(
                py(f"""
                import subprocess, sys, time, signal
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a stubborn child: needs SIGKILL
                child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
                open({str(pidfile)!r}, "w").write(f"{{child.pid}}")
                print("started", flush=True)
                time.sleep(600)
                """),
                name="hang",
                cwd=tmp_path,
                emit=lambda _: None,
                grace_s=1.0,
            )
        except BaseException as exc:
            outcome["exc"] = exc

    t = threading.Thread(target=work)
    t.start()
    deadline = time.monotonic() + 10
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    start = time.monotonic()
    _inject(t, FakeCancel)
    t.join(timeout=15)
    assert not t.is_alive()
    assert isinstance(outcome.get("exc"), FakeCancel)
    assert time.monotonic() - start < 5
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5  # SIGKILLed; init reaps it a moment later
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)


def test_sigkill_is_reported_as_likely_oom(tmp_path: Path) -> None:
    with pytest.raises(StepKilled, match=r"(?s)killed by SIGKILL.*out-of-memory killer"):
        run_step(
            py("""
            import os, signal
            print("loading weights", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
            """),
            name="convert",
            cwd=tmp_path,
            emit=lambda _: None,
        )


def test_garbage_and_gigantic_lines_stay_readable_and_bounded(tmp_path: Path) -> None:
    lines: list[str] = []
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run_step(
        py("""
        import sys
        out = sys.stdout.buffer
        out.write(b"\\xff\\xfe\\x00\\x1b[31mred\\x1b[0m garbage\\n")
        for _ in range(50):
            out.write(b"x" * (1 << 20))   # 50 MB without a newline
        out.write(b"\\nprogress 10%\\rprogress 20%\\rdone\\n")
        out.flush()
        """),
        name="g",
        cwd=tmp_path,
        emit=lines.append,
    )
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert lines[0] == "[g] \ufffd\ufffdred garbage"
    assert lines[1].endswith(f"... [{50 * (1 << 20) - MAX_LINE_BYTES} bytes cut]")
    assert len(lines[1]) < MAX_LINE_BYTES + 100
    assert lines[2:] == ["[g] progress 10%", "[g] progress 20%", "[g] done"]
    assert grown_kib < 40 * 1024  # far less than the 50 MB the child printed


def test_missing_program(tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match="could not start"):
        run_step(["/nonexistent/trtllm-build"], name="build", cwd=tmp_path, emit=lambda _: None)


def test_step_leaving_a_daemon_behind_does_not_hang(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    start = time.monotonic()
    run_step(
        py(f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
        print("done")
        """),
        name="s",
        cwd=tmp_path,
        emit=lambda _: None,
        grace_s=1.0,
    )
    assert time.monotonic() - start < 10
    deadline = time.monotonic() + 5
    while alive(int(pidfile.read_text())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(int(pidfile.read_text()))


# --- heartbeat (issue #13) ------------------------------------------------------------------------


def test_heartbeat_when_the_step_goes_quiet(tmp_path: Path) -> None:
    """Short intervals here (the real 20 s / 30 s are proven through the Cog server)."""
    out = tmp_path / "out"
    out.mkdir()
    seen: list[tuple[float, str]] = []
    start = time.monotonic()
    res = run_step(
        py(f"""
        import time
        print("loading", flush=True)
        buf = bytearray(120 << 20)           # resident: touched below
        for i in range(0, len(buf), 4096):
            buf[i] = 1
        open({str(out / "rank0.engine")!r}, "wb").write(b"x" * (3 << 20))
        time.sleep(3.2)
        print("tick", flush=True)
        time.sleep(1.4)
        """),
        name="build",
        cwd=tmp_path,
        emit=lambda line: seen.append((time.monotonic() - start, line)),
        output_dir=out,
        heartbeat=(1.0, 1.5),
    )
    lines = [line for _, line in seen]
    beats = [(t, line) for t, line in seen if "still running" in line]
    assert lines[0] == "[build] loading" and "[build] tick" in lines
    # silent for ~3.2 s: beats at ~1 s and ~2.5 s of silence; after "tick" ~1.4 s: one more at ~1 s
    assert len(beats) == 3, lines
    assert beats[0][1].startswith("[build] still running: ")
    assert "no output for 1 s" in beats[0][1] and re.search(r"no output for [23] s", beats[1][1])
    assert "output dir 3.0 MiB" in beats[0][1]
    assert re.search(r"peak RSS 1[2-9]\d\.\d MiB", beats[0][1]), beats[0][1]
    assert 1.4 < beats[1][0] - beats[0][0] < 2.5  # the next one after the longer interval
    tick = next(t for t, line in seen if line == "[build] tick")
    assert beats[2][0] - tick > 0.9  # silence counts again from the last line
    assert res.output_bytes == 3 << 20
    assert res.peak_rss_bytes is not None and res.peak_rss_bytes > 120 << 20


def test_no_heartbeat_while_output_flows(tmp_path: Path) -> None:
    lines: list[str] = []
    run_step(
        py("""
        import time
        for i in range(12):
            print(i, flush=True)
            time.sleep(0.25)
        """),
        name="s",
        cwd=tmp_path,
        emit=lines.append,
        heartbeat=(1.0, 1.0),
    )
    assert not [line for line in lines if "still running" in line]


# --- containment: daemons, dead parents, leftovers (issues #13, #14 item 7) --------------------------


def test_setsid_daemon_holding_stdout_neither_hangs_nor_leaks(tmp_path: Path) -> None:
    pidfile = tmp_path / "daemon"
    notes: list[str] = []
    start = time.monotonic()
    res = run_step(
        py(f"""
        import subprocess, sys
        # a daemon in a session of its own that keeps the step's stdout
        d = subprocess.Popen([sys.executable, "-c", "import time\\nwhile True: time.sleep(1)"], start_new_session=True)
        open({str(pidfile)!r}, "w").write(str(d.pid))
        print("started the daemon", flush=True)
        """),
        name="s",
        cwd=tmp_path,
        emit=notes.append,
    )
    assert res.returncode == 0 and time.monotonic() - start < 5
    daemon = int(pidfile.read_text())
    assert not alive(daemon)  # stopped before run_step returned
    assert any("the step exited; stopped 1 processes it left behind" in n and str(daemon) in n for n in notes), notes


def test_double_forked_daemon_with_its_own_output_is_stopped(tmp_path: Path) -> None:
    pidfile = tmp_path / "daemon"
    run_step(
        py(f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:       # the classic daemon: re-parented away from the step
                fd = os.open(os.devnull, os.O_RDWR)
                for i in (0, 1, 2):
                    os.dup2(fd, i)
                open({str(pidfile)!r}, "w").write(str(os.getpid()))
                while True:
                    time.sleep(1)
            os._exit(0)
        while not os.path.exists({str(pidfile)!r}):
            time.sleep(0.01)
        time.sleep(0.1)
        """),
        name="s",
        cwd=tmp_path,
        emit=lambda _: None,
    )
    assert not alive(int(pidfile.read_text()))


def test_step_that_closes_its_output_is_waited_for(tmp_path: Path) -> None:
    """The end of a step is its process's exit, not its output closing."""
    start = time.monotonic()
    with pytest.raises(StepFailed, match="exited with code 4") as info:
        run_step(
            py("""
            import os, sys, time
            print("closing my output", flush=True)
            os.close(1); os.close(2)
            time.sleep(1.5)
            sys.exit(4)
            """),
            name="s",
            cwd=tmp_path,
            emit=lambda _: None,
        )
    assert info.value.tail == ["closing my output"] and time.monotonic() - start > 1.4


RUN_IN_CHILD = """
import sys, json
from pathlib import Path
from trtllm_builder.run.runner import run_step
argv, locks = json.loads(sys.argv[1]), [Path(p) for p in json.loads(sys.argv[2])]
run_step(argv, name="hang", cwd=Path.cwd(), locks=locks, emit=lambda line: print(line, flush=True))
"""


def _runner_process(tmp_path: Path, step: list[str], locks: list[Path] = []) -> subprocess.Popen[str]:
    """A process that runs one step with run_step, in a session of its own (so it can be SIGKILLed alone)."""
    import json

    return subprocess.Popen(
        [sys.executable, "-c", RUN_IN_CHILD, json.dumps(step), json.dumps([str(p) for p in locks])],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def _hang_step(pidfile: Path, *, ignore_term: bool) -> list[str]:
    return py(f"""
        import signal, subprocess, sys, time
        if {ignore_term!r}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        code = "import signal, time\\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\\ntime.sleep(600)"
        child = subprocess.Popen([sys.executable, "-c", code if {ignore_term!r} else "import time; time.sleep(600)"])
        open({str(pidfile)!r}, "w").write(f"{{__import__('os').getpid()}} {{child.pid}}")
        print("working", flush=True)
        time.sleep(600)
        """)


def _wait_pids(pidfile: Path, timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while not (pidfile.exists() and len(pidfile.read_text().split()) == 2):
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.02)
    return [int(p) for p in pidfile.read_text().split()]


@pytest.mark.parametrize("ignore_term", [False, True], ids=["plain", "ignores-SIGTERM"])
def test_sigkill_of_the_runners_process_stops_the_step_tree(tmp_path: Path, ignore_term: bool) -> None:
    pidfile = tmp_path / "pids"
    proc = _runner_process(tmp_path, _hang_step(pidfile, ignore_term=ignore_term))
    pids = _wait_pids(pidfile)
    assert all(alive(p) for p in pids)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner's process (its own group), not the step's
    proc.wait(timeout=10)
    deadline = time.monotonic() + (12 if ignore_term else 5)  # SIGTERM, then SIGKILL after the 5 s grace
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if alive(p)]


def test_a_rerun_never_runs_beside_a_leftover(tmp_path: Path) -> None:
    """A killed run's step (slow to die: it ignores SIGTERM) still holds the lock: the next run waits."""
    lock = tmp_path / "locks" / "step.run"
    pidfile = tmp_path / "pids"
    proc = _runner_process(tmp_path, _hang_step(pidfile, ignore_term=True), [lock])
    pids = _wait_pids(pidfile)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    notes: list[str] = []
    check = f"""
        import sys
        def alive(pid):
            try:
                return open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
            except FileNotFoundError:
                return False
        print("leftovers alive:", [p for p in {pids!r} if alive(p)], flush=True)
        """
    res = run_step(py(check), name="hang", cwd=tmp_path, locks=[lock], emit=notes.append)
    assert any("waiting for processes of an earlier run of this step to stop (pid " in n for n in notes), notes
    assert "[hang] leftovers alive: []" in notes
    assert res.returncode == 0


def test_a_lock_held_too_long_is_an_error_naming_the_holder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import trtllm_builder.run.runner as runner

    lock = tmp_path / "step.run"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import fcntl, time; f = open({str(lock)!r}, 'w'); fcntl.flock(f, fcntl.LOCK_EX); print(1, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "1"
        monkeypatch.setattr(runner, "LEFTOVER_WAIT_S", 1.0)
        with pytest.raises(LeftoverError, match=rf"still hold {re.escape(str(lock))} \(pid {holder.pid} `"):
            run_step(py("print(1)"), name="convert", cwd=tmp_path, locks=[lock], emit=lambda _: None)
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_supervisor_takes_the_step_with_it(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    outcome: dict[str, BaseException] = {}

    def work() -> None:
        try:
            run_step(_hang_step(pidfile, ignore_term=False), name="hang", cwd=tmp_path, emit=lambda _: None)
        except BaseException as exc:
            outcome["exc"] = exc

    t = threading.Thread(target=work)
    t.start()
    step, grandchild = _wait_pids(pidfile)
    supervisor = int(Path(f"/proc/{step}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(supervisor, signal.SIGKILL)
    t.join(timeout=20)
    assert isinstance(outcome.get("exc"), StepFailed)
    assert "lost its supervisor process" in str(outcome["exc"])
    deadline = time.monotonic() + 5
    while (alive(step) or alive(grandchild)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(step) and not alive(grandchild)  # PR_SET_PDEATHSIG, then the step's group


def test_without_a_subreaper_descendants_are_tracked(tmp_path: Path) -> None:
    """Where prctl(PR_SET_CHILD_SUBREAPER) is refused, the supervisor scans /proc for what the step started."""
    from trtllm_builder.run.supervisor import Supervisor

    pidfile = tmp_path / "daemon"
    step = py(f"""
        import subprocess, sys, time
        d = subprocess.Popen([sys.executable, "-c", "import time\\nwhile True: time.sleep(1)"],
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        open({str(pidfile)!r}, "w").write(str(d.pid))
        time.sleep(0.5)   # seen by at least one scan before the step exits
        """)
    sup = Supervisor(step, cwd=tmp_path, env=None, subreaper=False)
    try:
        deadline = time.monotonic() + 20
        while not sup.gone and time.monotonic() < deadline:
            sup.events()
            time.sleep(0.05)
        assert sup.contained == "proc-scan" and sup.exit is not None
        assert [pid for pid, _ in sup.exit["leftovers"]] == [int(pidfile.read_text())]
        assert not alive(int(pidfile.read_text()))
    finally:
        os.close(sup.output_fd)
        sup.close()


# --- secrets in the raw stream (issue #14 item 8d) ---------------------------------------------------

TOKEN = "hf_StraddleSECRET0123456789abcdefXYZ"


def _leaks(text: str) -> list[str]:
    """Pieces of TOKEN (8+ characters) that appear in ``text``."""
    return [TOKEN[i : i + 8] for i in range(len(TOKEN) - 7) if TOKEN[i : i + 8] in text]


@pytest.mark.parametrize(
    "code",
    [
        # straddles the 8 KiB line cut: the first part fell before the cut
        f"sys.stdout.write('x' * ({MAX_LINE_BYTES} - 12) + {TOKEN!r} + '\\n')",
        # split by a carriage return (a progress display redrawing its line), and by other controls
        f"sys.stdout.write({TOKEN[:15]!r} + '\\r' + {TOKEN[15:]!r} + '\\n')",
        f"sys.stdout.write('token: ' + '\\x00\\x07'.join([{TOKEN[:9]!r}, {TOKEN[9:20]!r}, {TOKEN[20:]!r}]) + '\\n')",
        # escape sequences inside the token
        f"sys.stdout.write({TOKEN[:10]!r} + '\\x1b[0m' + {TOKEN[10:]!r} + '\\n')",
        # split across two writes, with a pause: two reads of the pipe
        f"sys.stdout.write({TOKEN[:13]!r}); sys.stdout.flush(); time.sleep(0.4); sys.stdout.write({TOKEN[13:]!r} + ' done\\n')",
        # cut off by the end of the output (a step killed while printing it)
        f"sys.stdout.write('prefix ' + {TOKEN[:20]!r})",
    ],
    ids=["line-cut", "carriage-return", "control-bytes", "escape-codes", "two-reads", "end-of-output"],
)
def test_secret_broken_up_in_the_stream_does_not_leak(tmp_path: Path, code: str) -> None:
    lines: list[str] = []
    with pytest.raises(StepFailed) as info:
        run_step(
            py(f"import sys, time\n{code}\nsys.stdout.flush()\nsys.exit(1)"),
            name="s",
            cwd=tmp_path,
            secrets=[TOKEN],
            emit=lines.append,
        )
    text = "\n".join(lines)
    assert "**********" in text, text[-300:]
    assert not _leaks(text) and not _leaks("\n".join(info.value.tail))  # (the command itself holds pieces)


def test_text_that_only_starts_like_a_secret_is_kept(tmp_path: Path) -> None:
    lines: list[str] = []
    run_step(
        py(f"print({TOKEN[:6]!r} + ' is how tokens start', flush=True); print('h', flush=True)"),
        name="s",
        cwd=tmp_path,
        secrets=[TOKEN],
        emit=lines.append,
    )
    assert lines == [f"[s] {TOKEN[:6]} is how tokens start", "[s] h"]
