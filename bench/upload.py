"""Upload overlapped with packing, against packing then uploading, on the same data.

Makes ``--mib`` MiB (default 512) of fp16-like random data in four rank engines and starts a moto S3
server on loopback (as tests/test_upload.py does). Each round, in alternating order, times
``write_archive`` followed by ``upload_archive`` (the baseline: engine ready -> packed -> uploaded)
and ``pack_and_upload`` (parts sent while the archive is written), deleting the objects after each
run. Prints the medians, the ratio overlapped / sequential (the median of the per-round ratios), and
the best an overlap can do, max(pack, upload) / (pack + upload), from the baseline's own two phases.
Moto is far slower than S3 (tens of MB/s on a small machine), so here the upload dominates and the
overlap can save at most the packing time; with pack and upload of similar speed it approaches 0.5.
Both paths send parts 4 at a time and verify the same way (part checksums, composite checksum,
sha256 file).

    python bench/upload.py [--mib 512] [--rounds 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _common import make_engine_files
from test_upload import ACCESS_KEY, SECRET_KEY, s3, start_moto, stop

from trtllm_builder.outputs.upload import S3Credentials, pack_and_upload, upload_archive
from trtllm_builder.package.archive import write_archive


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="scratch dir (default: a temp dir)")
    ap.add_argument("--verbose", action="store_true", help="print every round's times")
    ns = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-upload-", dir=ns.dir))
    proc, endpoint = start_moto()
    try:
        client = s3(endpoint)
        client.create_bucket(Bucket="bench")  # type: ignore[attr-defined]
        creds = S3Credentials(ACCESS_KEY, SECRET_KEY, None, "us-east-1", endpoint)
        src = scratch / "src"
        src.mkdir()
        members = [(f.name, f) for f in make_engine_files(src, ns.mib << 20)]
        out = scratch / "out"
        out.mkdir()
        quiet = lambda _: None  # noqa: E731
        times: dict[str, list[float]] = {"pack": [], "upload": [], "sequential": [], "overlapped": []}

        def clean() -> None:
            for p in out.iterdir():
                p.unlink()
            listed = client.list_objects_v2(Bucket="bench").get("Contents", [])  # type: ignore[attr-defined]
            for obj in listed:
                client.delete_object(Bucket="bench", Key=obj["Key"])  # type: ignore[attr-defined]

        def sequential() -> None:
            dest = out / "engine.tar.gz"
            t0 = time.perf_counter()
            write_archive(members, dest, {"format_version": 1}, log=quiet)
            t1 = time.perf_counter()
            upload_archive(dest, "s3://bench/seq", credentials=creds, log=quiet)
            t2 = time.perf_counter()
            times["pack"].append(t1 - t0)
            times["upload"].append(t2 - t1)
            times["sequential"].append(t2 - t0)

        def overlapped() -> None:
            t0 = time.perf_counter()
            pack_and_upload(members, out / "engine.tar.gz", {"format_version": 1}, "s3://bench/ovl",
                            credentials=creds, log=quiet)  # fmt: skip
            times["overlapped"].append(time.perf_counter() - t0)

        for i in range(ns.rounds):
            for run in (sequential, overlapped) if i % 2 == 0 else (overlapped, sequential):
                clean()
                run()
        clean()
        med = {k: statistics.median(v) for k, v in times.items()}
        if ns.verbose:
            print({k: [round(x, 2) for x in v] for k, v in times.items()})
        size = sum(p.stat().st_size for _, p in members)
        print(f"data: {size / 2**20:.0f} MiB fp16-like random in {len(members)} files; moto on loopback; "
              f"rounds: {ns.rounds}")  # fmt: skip
        for name in ("pack", "upload", "sequential", "overlapped"):
            print(f"{name:11s} median {med[name]:7.2f} s  {size / med[name] / 2**20:7.1f} MiB/s")
        best = max(med["pack"], med["upload"]) / (med["pack"] + med["upload"])
        print(f"best possible (max(pack, upload) / (pack + upload)): {best:.2f}")
        # each round runs both back to back: the median of the per-round ratios resists a load that drifts
        ratio = statistics.median(o / q for o, q in zip(times["overlapped"], times["sequential"], strict=True))
        print(f"ratio of the medians: {med['overlapped'] / med['sequential']:.2f}")
        print(f"RESULT overlapped/sequential ratio: {ratio:.2f} (per-round median; best possible {best:.2f})")
    finally:
        stop(proc)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
