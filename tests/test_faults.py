"""Faults, each for real: OOM-style SIGKILL, a full disk while a step writes and while packing,
output that is binary garbage or one enormous line."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import CliRun
from test_pipeline_e2e import project_config, unpack


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
