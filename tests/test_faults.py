"""Faults, each for real: OOM-style SIGKILL, a full disk while a step writes and while packing,
output that is binary garbage or one enormous line, stop signals, a SIGKILLed CLI."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CliRun, _alive, assert_processes_gone, start_hanging_build
from test_pipeline_e2e import project_config, standin_calls, unpack


def test_sigkilled_step_says_so(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    res = run_cli("build", str(cfg), env={"STANDIN_KILL": "convert_checkpoint.py"})
    assert res.returncode == 1
    assert "step `convert` was killed by SIGKILL" in res.stderr
    assert "out-of-memory killer" in res.stderr and "load_by_shard" in res.stderr


def _limited(limit: int) -> Callable[[], None]:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_disk_full_while_a_step_writes(
    standin_env: dict[str, str], tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    """A file-size limit on the whole tool: the engine write fails inside the step."""
    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    env = {**standin_env, "STANDIN_ENGINE_BYTES": str(4 << 20)}
    res = subprocess.run(
        [sys.executable, "-m", "trtllm_builder", "build", str(cfg), "-o", str(tmp_path / "e.tar.gz")],
        env=env, cwd=tmp_path, capture_output=True, text=True, preexec_fn=_limited(2 << 20), timeout=120,
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    assert "step `build` exited with code" in res.stderr
    assert "File too large" in res.stderr and "ran out of disk space (or hit a file-size limit)" in res.stderr
    assert not (tmp_path / "e.tar.gz").exists()


def test_disk_full_while_packing(standin_env: dict[str, str], tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    """Every file fits, the archive does not: a clear error and no half-written archive."""
    cfg = project_config(tmp_path, tiny_model("llama"), "llama", tp=2)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = {**standin_env, "STANDIN_ENGINE_BYTES": str(1 << 20)}
    res = subprocess.run(
        [sys.executable, "-m", "trtllm_builder", "build", str(cfg), "-o", str(out_dir / "e.tar.gz")],
        env=env, cwd=tmp_path, capture_output=True, text=True, preexec_fn=_limited(int(1.5 * (1 << 20))), timeout=120,
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    assert "could not write the archive" in res.stderr and "nothing was left behind" in res.stderr
    assert list(out_dir.iterdir()) == []
    # the finished steps survive in the step cache: the next run (with room) only packs
    res = subprocess.run(
        [sys.executable, "-m", "trtllm_builder", "build", str(cfg), "-o", str(out_dir / "e.tar.gz")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("reused from the step cache") == 2
    unpack(out_dir / "e.tar.gz", tmp_path / "x")


def test_garbage_output_stays_readable(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    res = run_cli("build", str(cfg), "-o", str(tmp_path / "e.tar.gz"), env={"STANDIN_GARBAGE": "convert_checkpoint.py"})
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert max(len(line) for line in lines) < 9000  # the 20 MiB line was cut
    assert any(line.startswith("[convert]") and "bytes cut]" in line for line in lines)
    assert "\x00" not in res.stderr and "\x1b[" not in res.stderr
    assert len(res.stderr) < 1 << 20


# --- stop signals and dead parents (issues #13, #14 item 6) ------------------------------------------


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"])
def test_stop_signal_during_a_step_is_handled_like_ctrl_c(
    standin_env: dict[str, str], tmp_path: Path, tiny_model: Callable[..., Path], sig: signal.Signals, code: int
) -> None:
    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    proc, pidfile = start_hanging_build(standin_env, cfg, tmp_path, stderr=subprocess.PIPE)
    start = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err[-2000:]
    assert time.monotonic() - start < 15
    assert f"stopped by {sig.name}: the build and every process it started were stopped, partial outputs removed" in err
    assert "[build] stopping: terminating the step's process group" in err
    assert "the next build reuses its finished steps" in err
    assert_processes_gone(pidfile)


def test_sigterm_while_packing_removes_the_partial_archive(
    standin_env: dict[str, str], tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trtllm_builder", "build", str(cfg), "-o", str(out / "e.tar.gz")],
        env={**standin_env, "STANDIN_ENGINE_BYTES": str(128 << 20)}, cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(p.name.startswith(".e.tar.gz.partial-") for p in out.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, "packing never started"
        time.sleep(0.002)
    proc.send_signal(signal.SIGSTOP)  # freeze it mid-packing, so the signal surely lands there
    partial = [p.name for p in out.iterdir()]
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert partial == [f".e.tar.gz.partial-{proc.pid}"]
    assert list(out.iterdir()) == []  # no partial archive, no archive
    assert "stopped by SIGTERM" in err


def test_a_dead_runs_partial_archive_is_removed_by_the_next(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".e.tar.gz.partial-{dead.pid}"
    stale.write_bytes(b"x" * (1 << 20))
    live = out / f".e.tar.gz.partial-{os.getpid()}"  # a build still packing (this process lives)
    live.write_bytes(b"y")
    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    res = run_cli("build", str(cfg), "-o", str(out / "e.tar.gz"))
    assert res.returncode == 0, res.stderr
    assert f"removed {stale} (1.0 MiB), a partial archive left by a run that died (pid {dead.pid})" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(["e.tar.gz", live.name])


def _overlaps(pids: list[int], log: Path, before: int, proc: subprocess.Popen[str], timeout: float) -> bool:
    """Watch until ``proc`` ends: True if a new trtllm-build run started while one of ``pids`` lived.

    Sound, never a false alarm: each round reads the log first, then checks the processes, so a
    leftover seen alive after the new run was logged really lived beside it.
    """
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        assert time.monotonic() < deadline, "the rerun did not finish"
        started = len(_builds(log)) > before
        if started and any(_alive(p) for p in pids):
            return True
        time.sleep(0.01)
    return False


def _builds(log: Path) -> list[dict]:
    return [c for c in standin_calls(log) if c["script"] == "trtllm-build"]


def test_sigkill_of_the_cli_stops_the_step_and_the_rerun_waits_for_it(
    standin_env: dict[str, str], tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    """A crashed CLI (its process group SIGKILLed): the step (which ignores SIGTERM) dies on its own,
    and a rerun started at once waits for it instead of running beside it."""
    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    env = {**standin_env, "STANDIN_HANG_TERM": "ignore"}
    proc, pidfile = start_hanging_build(env, cfg, tmp_path, stderr=subprocess.DEVNULL, start_new_session=True)
    pids = [int(p) for p in pidfile.read_text().split()]
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its group; nobody kills the step for it
    proc.wait(timeout=10)
    log = tmp_path / "standin.log"
    before = len(_builds(log))
    rerun = subprocess.Popen(
        [sys.executable, "-m", "trtllm_builder", "build", str(cfg), "-o", str(tmp_path / "e.tar.gz")],
        env=standin_env, cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert not _overlaps(pids, log, before, rerun, timeout=120)
    err = rerun.stderr.read() if rerun.stderr else ""
    assert rerun.wait() == 0, err[-2000:]
    assert "[build] waiting for processes of an earlier run of this step to stop (pid " in err
    assert len(_builds(log)) == before + 1
    assert_processes_gone(pidfile, timeout=1)
