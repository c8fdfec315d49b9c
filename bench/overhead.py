"""The tool's own cost: a pipeline of stand-in steps that do (almost) nothing, run through
``trtllm-builder build`` against the same commands run directly one after another.

The direct run gets the same argv (from ``plan --json``), the same working dir layout and the same
environment; the tool adds validation, parser checks (cached after the first run), GPU detection,
output streaming, verification and packaging. Prints the median wall times and their ratio.

    python bench/overhead.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import make_model, run_build, standin_env, write_config


def direct(plan: dict, model: Path, env: dict[str, str]) -> float:
    work = Path(plan["work_dir"])
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    start = time.perf_counter()
    (work / "model").symlink_to(model)
    for step in plan["steps"]:
        Path(step["output_dir"]).mkdir(parents=True, exist_ok=True)
        subprocess.run(step["argv"], cwd=step["cwd"], env=env, check=True, capture_output=True)
    took = time.perf_counter() - start
    shutil.rmtree(work)
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ns = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    try:
        env = standin_env(scratch)
        model = make_model(scratch / "model")
        cfg = write_config(scratch / "c.yaml", model)
        work = scratch / "work"
        out = subprocess.run(
            [sys.executable, "-m", "trtllm_builder", "plan", str(cfg), "--json", "--work-dir", str(work)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        plan = json.loads(out.stdout)
        run_build(cfg, scratch / "warm.tar.gz", env, "--no-cache")  # fills the parser cache, as the image build does
        tool, raw = [], []
        for _ in range(ns.rounds):
            raw.append(direct(plan, model, env))
            tool.append(run_build(cfg, scratch / "e.tar.gz", env, "--no-cache", "--work-dir", str(work)))
        t, d = statistics.median(tool), statistics.median(raw)
        print(f"{len(plan['steps'])} stand-in steps, {ns.rounds} rounds")
        print(f"commands run directly     median {d:6.3f} s")
        print(f"through trtllm-builder    median {t:6.3f} s  (+{t - d:.3f} s)")
        print(f"RESULT tool/direct wall-time ratio: {t / d:.2f} (absolute overhead {t - d:.2f} s per build)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
