"""Packaging speed: trtllm-builder's archive writer vs plain ``tar -cf`` on the same files.

Makes N GiB (default 1) of fp16-like random data split over rank engines, then times, alternating
the order each round, GNU ``tar -cf`` (no compression), GNU ``tar -czf`` (gzip default level,
for reference) and ``write_archive`` (tar.gz + sha256 of every file + manifest). Prints the
median of each and the ratios. Target: write_archive <= 2x tar -cf.

    python bench/package.py [--gib 1] [--rounds 3] [--dir DIR] [--with-gzip]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import make_engine_files

from trtllm_builder.package.archive import write_archive


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    os.sync()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="scratch dir (default: a temp dir)")
    ap.add_argument("--with-gzip", action="store_true", help="also time tar -czf (slow: ~30x)")
    ns = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-package-", dir=ns.dir))
    try:
        src = scratch / "src"
        src.mkdir()
        files = make_engine_files(src, int(ns.gib * (1 << 30)))
        names = [f.name for f in files]
        out = scratch / "out"
        out.mkdir()
        results: dict[str, list[float]] = {"tar -cf": [], "trtllm-builder": []}
        if ns.with_gzip:
            results["tar -czf"] = []

        def tar_cf() -> None:
            subprocess.run(["tar", "-cf", str(out / "a.tar"), "-C", str(src), *names], check=True)

        def tar_czf() -> None:
            subprocess.run(["tar", "-czf", str(out / "a.tgz"), "-C", str(src), *names], check=True)

        def ours() -> None:
            write_archive([(f.name, f) for f in files], out / "engine.tar.gz", {}, log=lambda _: None)

        runs = {"tar -cf": tar_cf, "trtllm-builder": ours, "tar -czf": tar_czf}
        for i in range(ns.rounds):
            order = list(results) if i % 2 == 0 else list(reversed(results))
            for name in order:
                for p in out.iterdir():
                    p.unlink()
                results[name].append(timed(runs[name]))
        base = statistics.median(results["tar -cf"])
        size = sum(f.stat().st_size for f in files)
        print(f"data: {size / 2**30:.2f} GiB fp16-like random in {len(files)} files; rounds: {ns.rounds}")
        for name, vals in results.items():
            med = statistics.median(vals)
            print(
                f"{name:16s} median {med:7.3f} s  {size / med / 2**20:8.1f} MiB/s  ratio vs tar -cf {med / base:5.2f}x"
            )
        ratio = statistics.median(results["trtllm-builder"]) / base
        print(f"RESULT packaging/tar-cf ratio: {ratio:.2f} (target <= 2.00)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
