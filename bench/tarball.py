"""``model_tar_url`` extraction: linear time and bounded memory, against GNU ``tar -x`` in the same run.

Three measurements, each printed as a ratio:

* members: extracting 2N small files takes ~2x extracting N (linear; the old extractor copied its
  whole read buffer on every 512-byte header, so many members went quadratic); and the time per
  member against ``tar -xzf`` of the same archive;
* data: extracting a compressible file (zeros, limits lifted) against ``tar -xzf``, with the
  extractor's peak RSS growth (the old one decompressed ~1 GiB per 1 MiB block read);
* a bomb (2 GiB of zeros in ~2 MB): the time until it is refused.

    python bench/tarball.py [--members 4000] [--mib 512] [--dir DIR]
"""

from __future__ import annotations

import argparse
import gzip
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trtllm_builder.errors import FetchError
from trtllm_builder.fetch.untar import Limits, extract_safely

_ZEROS = 16 << 20


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    return info.tobuf(format=tarfile.GNU_FORMAT)


def members_tar(path: Path, count: int) -> Path:
    with gzip.open(path, "wb", compresslevel=1) as gz:
        for i in range(count):
            gz.write(_header(f"m/f{i:06d}.json", 2) + b"{}".ljust(512, b"\0"))
        gz.write(b"\0" * 1024)
    return path


def zeros_tar(path: Path, total: int) -> Path:
    chunk = gzip.compress(b"\0" * _ZEROS, compresslevel=9)
    with path.open("wb") as f:
        f.write(gzip.compress(_header("m/zeros.bin", total)))
        for _ in range(total // _ZEROS):
            f.write(chunk)
        f.write(gzip.compress(b"\0" * 1024))
    return path


class _Stream(io.RawIOBase):
    """The archive as the network gives it: read only."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._f = path.open("rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        return self._f.readinto(buffer)


def ours(archive: Path, dest: Path, limits: Limits) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    start = time.perf_counter()
    extract_safely(_Stream(archive), dest, limits=limits)
    return time.perf_counter() - start


def gnu_tar(archive: Path, dest: Path) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    start = time.perf_counter()
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(dest)], check=True)
    return time.perf_counter() - start


def peak_rss_growth_mib(archive: Path, dest: Path) -> float:
    code = f"""
import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from pathlib import Path
from trtllm_builder.fetch.untar import Limits, extract_safely
peak = lambda: next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
class S:
    def __init__(self, f): self.f = f
    def read(self, n=-1): return self.f.read(n)
base = peak()
extract_safely(S(open({str(archive)!r}, "rb")), Path({str(dest)!r}), limits=Limits(max_ratio=1e9))
print(peak() - base)
"""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=4000, help="N (the second run extracts 2N)")
    ap.add_argument("--mib", type=int, default=512, help="MiB of zeros for the data run (multiple of 16)")
    ap.add_argument("--dir", type=Path, default=None, help="scratch dir (default: a temp dir)")
    ns = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-tarball-", dir=ns.dir))
    try:
        lifted = Limits(max_members=10 * ns.members, max_ratio=1e9)
        n, n2 = members_tar(scratch / "n.tar.gz", ns.members), members_tar(scratch / "2n.tar.gz", 2 * ns.members)
        t_n, t_2n = ours(n, scratch / "out", lifted), ours(n2, scratch / "out", lifted)
        tar_2n = gnu_tar(n2, scratch / "out")
        print(
            f"members: {ns.members} in {t_n:.2f} s, {2 * ns.members} in {t_2n:.2f} s: "
            f"ratio {t_2n / t_n:.2f} (linear: ~2)"
        )
        print(f"members: {2 * ns.members} with tar -xzf in {tar_2n:.2f} s: ours / tar = {t_2n / tar_2n:.2f}")

        z = zeros_tar(scratch / "z.tar.gz", ns.mib << 20)
        t_z, tar_z = ours(z, scratch / "out", lifted), gnu_tar(z, scratch / "out")
        rss = peak_rss_growth_mib(z, scratch / "out")
        print(
            f"data: {ns.mib} MiB of zeros ({z.stat().st_size / 2**20:.1f} MiB compressed) in {t_z:.2f} s, "
            f"tar -xzf {tar_z:.2f} s: ours / tar = {t_z / tar_z:.2f}; peak RSS growth {rss:.0f} MiB"
        )
        shutil.rmtree(scratch / "out", ignore_errors=True)

        bomb = zeros_tar(scratch / "bomb.tar.gz", 2 << 30)
        (scratch / "out").mkdir()
        start = time.perf_counter()
        try:
            extract_safely(_Stream(bomb), scratch / "out", compressed_size=bomb.stat().st_size)
            verdict = "NOT refused"
        except FetchError:
            verdict = "refused"
        took = time.perf_counter() - start
        print(f"bomb: 2 GiB of zeros in {bomb.stat().st_size / 1e6:.1f} MB {verdict} in {took:.3f} s")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
