"""Shared set-up for the benchmarks: the stand-in world, a model, a config, running the CLI."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from standin_world import standin_vars  # noqa: E402


def standin_env(scratch: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STANDIN_") and k != "HF_TOKEN"}
    env.update(standin_vars())
    env.update(
        TRTLLM_BUILDER_CACHE=str(scratch / "cache"),
        TMPDIR=str(scratch / "tmp"),
        # an installed package runs from bytecode (pip compiles it): so do the benchmarks' children,
        # whatever PYTHONDONTWRITEBYTECODE says here, with the bytecode kept in the scratch dir
        PYTHONPYCACHEPREFIX=str(scratch / "pycache"),
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    (scratch / "tmp").mkdir(parents=True, exist_ok=True)
    env.update(extra)
    return env


def make_engine_files(root: Path, nbytes: int, ranks: int = 4) -> list[Path]:
    """``nbytes`` of fp16-like random data (as incompressible as real engine weights) in ``ranks``
    rank engines, and a small ``config.json``: what packing and uploading benchmarks feed the tool."""
    import numpy as np

    rng = np.random.default_rng(0)
    per = nbytes // ranks
    files = []
    for r in range(ranks):
        p = root / f"rank{r}.engine"
        with p.open("wb") as fh:
            left = per
            while left:
                n = min(left, 64 << 20)
                fh.write(rng.standard_normal(n // 2, dtype=np.float32).astype(np.float16).tobytes())
                left -= n
        files.append(p)
    (root / "config.json").write_text('{"version": "1.2.1"}\n')
    files.append(root / "config.json")
    return files


def make_model(dest: Path, weight_bytes: int = 0) -> Path:
    """A tiny llama-like model; with ``weight_bytes`` its safetensors file is padded to that size."""
    from modelgen import make_tiny_model

    make_tiny_model(dest, "llama")
    if weight_bytes:
        header = json.dumps(
            {"model.padding": {"dtype": "U8", "shape": [weight_bytes], "data_offsets": [0, weight_bytes]}}
        )
        raw = header.encode() + b" " * (-len(header) % 8)
        with (dest / "model.safetensors").open("wb") as fh:
            fh.write(struct.pack("<Q", len(raw)) + raw)
            left = weight_bytes
            while left:
                n = min(left, 16 << 20)
                fh.write(os.urandom(n))
                left -= n
    return dest


def write_config(path: Path, model: Path, *, tp: int = 1) -> Path:
    path.write_text(
        f"""\
model: {{id: {model}}}
trtllm: {{example: llama}}
steps:
  - name: convert
    script: convert_checkpoint.py
    args: {{dtype: float16, tp_size: {tp}}}
  - name: build
    command: trtllm-build
    args: {{max_batch_size: 4, max_seq_len: 256}}
"""
    )
    return path


def run_build(config: Path, out: Path, env: dict[str, str], *extra: str) -> float:
    """Run ``trtllm-builder build`` as a user would; returns wall seconds."""
    start = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "trtllm_builder", "build", str(config), "-o", str(out), *extra],
        env=env,
        capture_output=True,
        text=True,
    )
    took = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"build failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return took
