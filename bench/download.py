"""Download throughput: ``fetch_model`` (huggingface_hub's client) vs a plain parallel copy.

Both read the same random files from the same fake hub on 127.0.0.1 (tests/hubserver.py, in a process
of its own), runs alternating, best of ``--repeat``. The baseline is a plain parallel copy: one
streaming ``requests`` GET per file, ``--workers`` files at a time (a sequential copy is printed
too). Also printed: the transport ``fetch_model`` chose, and the client's CPU seconds per run, which
show where a run is CPU-bound. It prints numbers, it does not pass or fail. Goal: fetch_model at
>= 0.9x the parallel copy.

    .venv/bin/python bench/download.py [--files 6] [--mib 64] [--repeat 3] [--workers 8] [--dir /dev/shm]

To see where the time goes: ``py-spy record -r 200 --threads -f raw -o prof.txt -- python bench/download.py``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # huggingface_hub reads it at import

import requests  # noqa: E402
from hubserver import HubServer  # noqa: E402

from trtllm_builder.fetch.sources import ModelRef, fetch_model  # noqa: E402

MB = 1e6


def make_files(folder: Path, count: int, mib: int) -> dict[str, bytes | Path]:
    files: dict[str, bytes | Path] = {"config.json": b"{}", "tokenizer.json": b"{}"}
    for i in range(count):
        path = folder / f"model-{i + 1:05d}-of-{count:05d}.safetensors"
        with path.open("wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
        files[path.name] = path
    return files


def _copy_one(url: str, dest: Path) -> int:
    total = 0
    with requests.get(url, stream=True, timeout=(10, 60)) as r, dest.open("wb") as out:
        r.raise_for_status()
        for chunk in r.iter_content(1 << 20):
            out.write(chunk)
            total += len(chunk)
    return total


def plain_copy(endpoint: str, repo: str, sha: str, names: list[str], dest: Path, workers: int) -> int:
    """One streaming GET per file, ``workers`` at a time: what a careful script with requests does."""
    urls = [f"{endpoint}/{repo}/resolve/{sha}/{name}" for name in names]
    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(_copy_one, urls, [dest / n for n in names]))


class _Timed:
    """Wall and CPU seconds (this process and its threads) of the block."""

    def __enter__(self) -> _Timed:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def serve(files: dict[str, bytes | Path], queue: multiprocessing.Queue[tuple[str, str]]) -> None:
    with HubServer() as hub:
        sha = hub.add_repo("bench/model", files)
        queue.put((hub.endpoint, sha))
        threading.Event().wait()  # until terminated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=6, help="number of weight shards")
    parser.add_argument("--mib", type=int, default=64, help="MiB per shard")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is reported")
    parser.add_argument("--workers", type=int, default=8, help="parallel files of the plain copy")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None,
        help="where to write (default: /dev/shm, so disk writeback does not decide the ratio)",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-download-", dir=args.dir))
    try:
        files = make_files(work, args.files, args.mib)
        names = sorted(files)
        # The server gets a process of its own, so client and server threads do not share a GIL.
        ctx = multiprocessing.get_context("spawn")
        queue: multiprocessing.Queue[tuple[str, str]] = ctx.Queue()
        server = ctx.Process(target=serve, args=(files, queue), daemon=True)
        server.start()
        try:
            endpoint, sha = queue.get(timeout=120)
            os.environ["HF_ENDPOINT"] = endpoint
            size = sum(p.stat().st_size if isinstance(p, Path) else len(p) for p in files.values())
            print(f"{len(files)} files, {size / MB:.0f} MB, served by the fake hub at {endpoint}")

            import huggingface_hub

            version = f"huggingface_hub {huggingface_hub.__version__}, Python {sys.version.split()[0]}"
            print(f"{version}, {os.cpu_count()} cores")
            runs: dict[str, list[_Timed]] = {"fetch": [], "plain": [], "sequential": []}
            lines: list[str] = []
            for run in range(args.repeat):
                # Flush the previous run's dirty pages first, and delete nothing until the end: writeback
                # and discards would otherwise slow whichever copy comes next and decide the ratio.
                os.sync()
                cache = work / f"cache-{run}"
                with _Timed() as t:
                    model = fetch_model(ModelRef("bench/model"), token=None, cache_dir=cache, log=lines.append)
                runs["fetch"].append(t)
                assert model.size_bytes == size, (model.size_bytes, size)
                for kind, workers in (("plain", args.workers), ("sequential", 1)):
                    dest = work / f"{kind}-{run}"
                    dest.mkdir()
                    os.sync()
                    with _Timed() as t:
                        copied = plain_copy(endpoint, "bench/model", sha, names, dest, workers)
                    runs[kind].append(t)
                    assert copied == size, (copied, size)
        finally:
            server.terminate()
            server.join()

        transport = next((line for line in lines if line.startswith("transport: ")), "transport: (not printed)")
        print(transport)
        best = {kind: min(ts, key=lambda t: t.wall) for kind, ts in runs.items()}
        labels = {
            "fetch": "fetch_model (huggingface_hub)",
            "plain": f"plain parallel copy ({args.workers})",
            "sequential": "plain sequential copy",
        }
        for kind, t in best.items():
            print(f"{labels[kind]:32s} {size / MB / t.wall:8.0f} MB/s  ({t.wall:.2f} s, client CPU {t.cpu:.2f} s)")
        ratio = best["plain"].wall / best["fetch"].wall
        print(f"ratio fetch_model / plain parallel copy {ratio:8.2f}x  (goal >= 0.9x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
