"""Disk budget: peak disk use of a build divided by the model's size.

Builds a model of ``--mib`` MiB (default 300) through the stand-ins, whose checkpoint and
engines are made as large as the model (as real fp16 ones are), while a sampler thread adds up
the bytes under the model dir, the work dir, the cache and the output (each inode once, so hard
links count once) every few milliseconds. Prints peak / model size for three builds:

* ``--no-cache``: outputs no later step reads are deleted as soon as they are not needed;
* the step cache on, with room: every output is kept (model + checkpoint + engine + archive);
* the step cache on, with a disk budget (``--disk-budget``) between the two estimates
  (2.5x the model on top of it): the build keeps only what resume needs, i.e. drops the cached
  checkpoint once the engine is verified.

Target <= 3 including the model with the step cache on when keeping everything does not fit.

    python bench/disk.py [--mib 300]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from _common import make_model, run_build, standin_env, write_config


def used_bytes(roots: list[Path]) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                ident = (st.st_dev, st.st_ino)
                if ident not in seen:
                    seen.add(ident)
                    total += st.st_blocks * 512
    return total


def peak_during(roots: list[Path], fn) -> int:  # type: ignore[no-untyped-def]
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, used_bytes(roots))
            time.sleep(0.005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        fn()
    finally:
        stop.set()
        t.join()
    return max(peak, used_bytes(roots))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=300)
    ns = ap.parse_args()
    size = ns.mib << 20
    scratch = Path(tempfile.mkdtemp(prefix="bench-disk-"))
    try:
        model = make_model(scratch / "model", weight_bytes=size)
        model_bytes = used_bytes([model])
        # fp16 checkpoint and engine are about as large as the fp16 model
        env = standin_env(
            scratch, STANDIN_CHECKPOINT_BYTES=str(size), STANDIN_ENGINE_BYTES=str(size), STANDIN_SLEEP="0.3"
        )
        cfg = write_config(scratch / "c.yaml", model)
        roots = [model, scratch / "tmp", scratch / "cache", scratch / "out"]
        results = {}
        budget = str(int(2.5 * model_bytes))  # keep-all needs 3x on top of the local model, lean 2x
        runs = (
            ("--no-cache", ("--no-cache",)),
            ("cache, room", ()),
            ("cache, budget", ("--disk-budget", budget)),
        )
        for label, extra in runs:
            shutil.rmtree(scratch / "cache", ignore_errors=True)
            shutil.rmtree(scratch / "out", ignore_errors=True)
            (scratch / "out").mkdir()
            peak = peak_during(
                roots, lambda extra=extra: run_build(cfg, scratch / "out" / "engine.tar.gz", env, *extra)
            )
            results[label] = peak / model_bytes
            print(
                f"{label:14s} peak {peak / 2**20:8.1f} MiB  model {model_bytes / 2**20:7.1f} MiB  "
                f"ratio {peak / model_bytes:.2f}"
            )
        print(
            f"RESULT peak/model ratio: {results['--no-cache']:.2f} without cache, "
            f"{results['cache, room']:.2f} with the step cache and room to keep everything, "
            f"{results['cache, budget']:.2f} with the step cache when that does not fit (target <= 3)"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
