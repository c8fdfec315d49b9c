"""The step runner, against real child processes (``sys.executable -c ...``)."""

from __future__ import annotations

import ctypes
import os
import resource
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from trtllm_builder.errors import StepFailed, StepKilled, StepTimeout
from trtllm_builder.runner import MAX_LINE_BYTES, run_step


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
