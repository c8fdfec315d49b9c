"""Where the stand-in TensorRT-LLM releases live, and the environment that makes one of them *the* one.

One tree per release under ``tests/standin/trees/<version>/``: ``TensorRT-LLM/`` (point ``TRTLLM_DIR``
at it) and, from 0.8 on, ``bin/trtllm-build`` (first on ``PATH``). The machine's tools (``mpirun``,
``nvidia-smi``) do not depend on the release and live in ``tests/standin/bin/``. No pytest here, so
the benchmarks can use it too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "tests" / "standin"
TREES = STANDIN / "trees"
DEFAULT_RELEASE = "1.2.1"  # the image's default TensorRT-LLM (issue #10)
RELEASES = ("1.2.1", "0.21.0")  # the releases the image supports
OLD_RELEASE = "0.7.1"  # cog-trt-llm's era: hf_gpt_convert.py, per-model build.py, no trtllm-build
STANDIN_TOOLS = STANDIN / "bin"  # mpirun, nvidia-smi
# Stand-in Triton templates per release (tests/standin/README.md, "Triton templates"). From 0.20 they
# live in TensorRT-LLM's own triton_backend/; the default one matches the default release.
BACKENDS = {
    "v0.18.2": STANDIN / "backend" / "tensorrtllm_backend-v0.18.2",
    "v0.19.0": STANDIN / "backend" / "tensorrtllm_backend-v0.19.0",
    "1.2.1": TREES / "1.2.1" / "TensorRT-LLM" / "triton_backend",
}
BACKEND_DIR = BACKENDS["1.2.1"]


def tree_dir(release: str = DEFAULT_RELEASE) -> Path:
    """The stand-in ``TensorRT-LLM`` checkout of ``release`` (what ``TRTLLM_DIR`` names)."""
    path = TREES / release / "TensorRT-LLM"
    if not path.is_dir():
        known = sorted(p.name for p in TREES.iterdir() if p.is_dir())
        raise ValueError(f"no stand-in tree for TensorRT-LLM {release}; there are: {', '.join(known)}")
    return path


def bin_dir(release: str = DEFAULT_RELEASE) -> Path:
    """The release's own executables (``trtllm-build``); may not exist (releases before 0.8)."""
    return TREES / release / "bin"


def standin_path(release: str = DEFAULT_RELEASE, rest: str | None = None) -> str:
    """``PATH`` with the release's tools first, then ``mpirun``/``nvidia-smi``, then this Python's directory.

    The test Python's directory comes before the rest so the ``#!/usr/bin/env python3`` of the stand-in
    executables finds a fast interpreter (a pyenv shim costs ~0.2 s per call).
    """
    parts = [str(d) for d in (bin_dir(release), STANDIN_TOOLS) if d.is_dir()]
    parts.append(str(Path(sys.executable).parent))
    tail = os.environ.get("PATH", "") if rest is None else rest
    return os.pathsep.join([*parts, tail] if tail else parts)


def standin_vars(release: str = DEFAULT_RELEASE) -> dict[str, str]:
    """The variables that select the stand-in world of ``release`` (tree, tools, Triton templates)."""
    return {
        "PATH": standin_path(release),
        "TRTLLM_DIR": str(tree_dir(release)),
        "TRTLLM_BACKEND_DIR": str(BACKEND_DIR),
    }
