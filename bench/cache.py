"""Step cache: time of a repeated build relative to the first, with steps that take seconds.

Every stand-in step sleeps ``--step-seconds`` (default 3) before writing, like a (very) small
real convert/build. The first build runs both steps; the second, of the same config, should
reuse both from the step cache. Prints both times and their ratio.

    python bench/cache.py [--step-seconds 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from _common import make_model, run_build, standin_env, write_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step-seconds", type=float, default=3.0)
    ns = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    try:
        env = standin_env(scratch, STANDIN_SLEEP=str(ns.step_seconds))
        cfg = write_config(scratch / "c.yaml", make_model(scratch / "model"))
        first = run_build(cfg, scratch / "a.tar.gz", env)
        second = run_build(cfg, scratch / "b.tar.gz", env)
        nocache = run_build(cfg, scratch / "c.tar.gz", env, "--no-cache")
        print(f"steps sleep {ns.step_seconds:g} s each (2 steps)")
        print(f"first build (cold cache)   {first:7.2f} s")
        print(f"repeated build (cache hit) {second:7.2f} s")
        print(f"repeated with --no-cache   {nocache:7.2f} s")
        print(f"RESULT repeated/first ratio: {second / first:.3f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
