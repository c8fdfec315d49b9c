"""Download throughput: ``fetch_model`` (huggingface_hub's client) vs a plain ``requests`` copy.

Both read the same random files from the same fake hub on 127.0.0.1 (tests/hubserver.py), so the ratio
shows what the client costs or gains over one plain HTTP stream per file. It prints numbers, it does
not pass or fail.

    .venv/bin/python bench/download.py [--files 6] [--mib 64] [--repeat 3] [--dir /dev/shm]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # huggingface_hub reads it at import

import requests  # noqa: E402
from hubserver import HubServer  # noqa: E402

from trtllm_builder.sources import ModelRef, fetch_model  # noqa: E402

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


def plain_copy(endpoint: str, repo: str, sha: str, names: list[str], dest: Path) -> int:
    """One streaming GET per file, one after the other: what a careful script with requests does."""
    total = 0
    with requests.Session() as session:
        for name in names:
            url = f"{endpoint}/{repo}/resolve/{sha}/{name}"
            with session.get(url, stream=True, timeout=(10, 60)) as r, (dest / name).open("wb") as out:
                r.raise_for_status()
                for chunk in r.iter_content(1 << 20):
                    out.write(chunk)
                    total += len(chunk)
    return total


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

            best_fetch = best_plain = float("inf")
            for run in range(args.repeat):
                # Flush the previous run's dirty pages first, and delete nothing until the end: writeback
                # and discards would otherwise slow whichever copy comes next and decide the ratio.
                os.sync()
                cache = work / f"cache-{run}"
                start = time.perf_counter()
                model = fetch_model(ModelRef("bench/model"), token=None, cache_dir=cache, log=lambda _: None)
                best_fetch = min(best_fetch, time.perf_counter() - start)
                assert model.size_bytes == size, (model.size_bytes, size)

                dest = work / f"plain-{run}"
                dest.mkdir()
                os.sync()
                start = time.perf_counter()
                copied = plain_copy(endpoint, "bench/model", sha, names, dest)
                best_plain = min(best_plain, time.perf_counter() - start)
                assert copied == size, (copied, size)
        finally:
            server.terminate()
            server.join()

        fetch_rate, plain_rate = size / MB / best_fetch, size / MB / best_plain
        print(f"fetch_model (huggingface_hub)   {fetch_rate:8.0f} MB/s  ({best_fetch:.2f} s)")
        print(f"plain requests copy             {plain_rate:8.0f} MB/s  ({best_plain:.2f} s)")
        print(f"ratio fetch_model / plain       {fetch_rate / plain_rate:8.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
