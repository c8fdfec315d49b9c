"""Shared fixtures: the stand-in TensorRT-LLM tree, tiny models, and running the CLI for real."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from standin_world import (  # noqa: E402
    BACKEND_DIR,
    BACKENDS,
    DEFAULT_RELEASE,
    OLD_RELEASE,
    RELEASES,
    STANDIN,
    STANDIN_TOOLS,
    TREES,
    bin_dir,
    standin_path,
    standin_vars,
    tree_dir,
)

TRTLLM_DIR = tree_dir(DEFAULT_RELEASE)  # the default release's tree
STANDIN_BIN = bin_dir(DEFAULT_RELEASE)  # its trtllm-build; mpirun/nvidia-smi are in STANDIN_TOOLS

__all__ = [
    "BACKENDS",
    "BACKEND_DIR",
    "DEFAULT_RELEASE",
    "OLD_RELEASE",
    "RELEASES",
    "ROOT",
    "STANDIN",
    "STANDIN_BIN",
    "STANDIN_TOOLS",
    "TREES",
    "TRTLLM_DIR",
    "bin_dir",
    "standin_path",
    "tree_dir",
]

# `--run-gpu`: GPU tests run only when asked; a run without it prints that they were NOT run.
from _gpu_option import pytest_addoption, pytest_collection_modifyitems, pytest_terminal_summary  # noqa: E402, F401


def _tree_entries() -> set[str]:
    skip = {".pytest_cache", ".mypy_cache", ".ruff_cache", "__pycache__"}
    return {p.name for p in ROOT.iterdir() if p.name not in skip and not p.name.startswith(".venv")}


@pytest.fixture(scope="session", autouse=True)
def _source_tree_left_alone() -> Iterator[None]:
    """No test may write into the checkout (a stand-in's timing cache in the cwd, say)."""
    before = _tree_entries()
    yield
    added = sorted(_tree_entries() - before)
    assert not added, f"tests left files at the top of the checkout: {added} (run steps from a tmp dir)"


@pytest.fixture
def standin_release() -> str:
    """The stand-in TensorRT-LLM release a test runs against (default: the image's default, 1.2.1).

    Pick another with ``@pytest.mark.parametrize("standin_release", ["0.21.0"])`` (or ``OLD_RELEASE``
    for the 0.5-0.7-era scripts); ``standin_env``, ``run_cli`` and everything built on them follow.
    """
    return DEFAULT_RELEASE


@pytest.fixture
def standin_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, standin_release: str) -> dict[str, str]:
    """Environment in which the stand-ins are *the* TensorRT-LLM: tree via TRTLLM_DIR, tools via PATH.

    Also set on this process (monkeypatch), so in-process calls see the same world.
    """
    env = {
        **standin_vars(standin_release),
        "TRTLLM_BUILDER_CACHE": str(tmp_path / "cache"),
        "TMPDIR": str(tmp_path / "tmp"),
        "HOME": str(tmp_path / "home"),
        "STANDIN_LOG": str(tmp_path / "standin.log"),
    }
    for key in list(os.environ):
        if key.startswith("STANDIN_") or key in {"HF_TOKEN", "HF_ENDPOINT"}:
            monkeypatch.delenv(key, raising=False)
    (tmp_path / "tmp").mkdir()
    (tmp_path / "home").mkdir()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    full = dict(os.environ)
    full.update(env)
    return full


@pytest.fixture
def tiny_model(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``tiny_model("llama")`` makes a tiny HF model directory (no network)."""
    from modelgen import make_tiny_model

    def make(arch: str = "gpt2", name: str | None = None, **kw: object) -> Path:
        dest = tmp_path / "models" / (name or arch)
        return make_tiny_model(dest, arch, **kw)  # type: ignore[arg-type]

    return make


CliRun = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_cli(standin_env: dict[str, str], tmp_path: Path) -> CliRun:
    """Run ``python -m trtllm_builder ARGS`` as a real subprocess in the stand-in world."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120, cwd: Path | None = None):
        full = dict(standin_env)
        full.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "trtllm_builder", *args],
            cwd=cwd or tmp_path,
            env=full,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def assert_processes_gone(pidfile: Path, timeout: float = 5.0) -> None:
    """Every pid the stand-ins wrote to ``pidfile`` (step and grandchild) is gone (zombies count as gone)."""
    import time

    pids = [int(p) for p in pidfile.read_text().split()]
    assert pids, f"{pidfile} lists no processes"
    deadline = time.monotonic() + timeout
    alive: list[int] = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in pids if _alive(pid)]
        if alive:
            time.sleep(0.05)
    assert not alive, f"processes still running: {alive}"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def start_hanging_build(
    env: dict[str, str], config: Path, cwd: Path, **popen: object
) -> tuple[subprocess.Popen[str], Path]:
    """``trtllm-builder build`` whose trtllm-build step hangs; returns once the step (and its child) run."""
    import time

    pidfile = cwd / "pids"
    proc: subprocess.Popen[str] = subprocess.Popen(  # type: ignore[call-overload]
        [sys.executable, "-m", "trtllm_builder", "build", str(config)],
        env={**env, "STANDIN_HANG": "trtllm-build", "STANDIN_PIDFILE": str(pidfile)},
        cwd=cwd,
        text=True,
        **popen,
    )
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and len(pidfile.read_text().split()) >= 2):
        assert time.monotonic() < deadline and proc.poll() is None, "the hanging step never started"
        time.sleep(0.1)
    return proc, pidfile
