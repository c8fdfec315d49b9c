"""The engine archive: a ``.tar.gz`` readable by plain ``tar -xzf``, with a checksummed manifest.

Engines are nearly incompressible fp16/fp8 data, and gzip at its default level spends ~30x the
time of ``tar -cf`` to save a few percent. So each file gets the level it deserves: a sample is
compressed first, and incompressible files are written as stored deflate blocks (level 0: gzip
framing and CRC only), while tokenizer and config files get real compression. Both kinds of
deflate block live in one gzip member (see :class:`_GzipStream`), readable by every gzip reader,
streaming ones included. One pass over each file computes its sha256 while it is written;
memory stays flat (fixed-size chunks) and the archive appears atomically (temp file + rename).

The writer only ever appends, so a reader may follow the temp file while it grows: ``follow``
is told, after each chunk, how many bytes of it are final (the S3 upload sends them as parts
meanwhile, see :func:`.upload.pack_and_upload`). A ``pack:`` progress line is printed at least
every 5 s and at the end, from the calling thread (the one that owns the log).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tarfile
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from trtllm_builder.errors import PackagingError
from trtllm_builder.progress import DEFAULT_INTERVAL_S, ProgressMeter

__all__ = [
    "ArchiveFile",
    "archive_size_bound",
    "manifest_bytes",
    "remove_stale_partials",
    "write_archive",
]

Follow = Callable[[Path, int], object]  # (temp file being written, bytes of it that are final)

CHUNK = 4 << 20
SAMPLE = 256 << 10
BLOCK = tarfile.BLOCKSIZE


@dataclass(frozen=True)
class ArchiveFile:
    path: str
    sha256: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


def _level_for(path: Path, size: int) -> int:
    """0 for data that does not compress (engines, weights), 6 for text-like files."""
    if size == 0:
        return 6
    with path.open("rb") as fh:
        sample = fh.read(SAMPLE)
    ratio = len(zlib.compress(sample, 1)) / max(len(sample), 1)
    if ratio > 0.9:
        return 0
    return 6 if size < (64 << 20) else 1


class _GzipStream:
    """One gzip member whose deflate stream mixes stored and compressed blocks.

    A deflate stream is a sequence of independent blocks, so after a sync flush (which leaves
    the output byte-aligned) stored blocks framed by hand can follow compressed ones and vice
    versa. One member, not several concatenated ones, because some readers (Python's
    ``tarfile`` in stream mode ``r|gz``) silently stop after the first member.

    Stored blocks cost a 5-byte header per 64 KiB and no copy through zlib (which runs at
    ~0.5 GB/s even at level 0); the CRC (zlib.crc32) runs at several GB/s.
    """

    _MAX = 0xFFFF

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.crc = 0
        self._size = 0
        self._deflate: Any = None  # zlib compressobj while in a compressed section
        self._level = -1
        raw.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")  # magic, deflate, no flags, mtime 0, OS unknown

    def _end_compressed(self) -> None:
        if self._deflate is not None:
            self._raw.write(self._deflate.flush(zlib.Z_SYNC_FLUSH))  # byte-aligned, not final
            self._deflate = None

    def write(self, data: bytes | bytearray | memoryview, level: int) -> None:
        """Append ``data`` compressed at ``level`` (1-9; stored data goes through :meth:`write_stored`)."""
        view = memoryview(data)
        self.crc = zlib.crc32(view, self.crc)
        if self._deflate is None or level != self._level:
            self._end_compressed()
            self._deflate = zlib.compressobj(level, zlib.DEFLATED, -15)
            self._level = level
        self._size += len(view)
        self._raw.write(self._deflate.compress(view))

    def write_stored(self, view: memoryview) -> None:
        """Frame ``view`` as stored blocks; the caller keeps :attr:`crc` up to date.

        Headers and data go out in one ``writev`` straight from the caller's buffer: no copy.
        """
        self._end_compressed()
        self._size += len(view)
        iov: list[bytes | memoryview] = []
        for off in range(0, len(view), self._MAX):
            piece = view[off : off + self._MAX]
            n = len(piece)
            iov.append(struct.pack("<BHH", 0, n, n ^ 0xFFFF))
            iov.append(piece)
        self._raw.flush()
        fd = self._raw.fileno()
        while iov:
            written = os.writev(fd, iov)
            # a short write (rare on regular files) leaves a remainder to send again
            while iov and written >= len(iov[0]):
                written -= len(iov[0])
                iov.pop(0)
            if iov and written:
                iov[0] = memoryview(iov[0])[written:]

    def close(self) -> None:
        self._end_compressed()
        self._raw.write(b"\x01\x00\x00\xff\xff")  # an empty final stored block
        self._raw.write(struct.pack("<II", self.crc, self._size & 0xFFFFFFFF))


class _TarGzWriter:
    """A tar stream written through one gzip member, each file at the level it deserves.

    ``chunk_done(n)`` is called after each chunk of ``n`` source bytes went out.
    """

    def __init__(self, raw: BinaryIO, chunk_done: Callable[[int], None] = lambda n: None) -> None:
        self._gz = _GzipStream(raw)
        self._chunk_done = chunk_done

    @staticmethod
    def _header(name: str, size: int, mtime: float) -> bytes:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = int(mtime)
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")

    def add_file(self, name: str, src: Path) -> ArchiveFile:
        st = src.stat()
        level = _level_for(src, st.st_size)
        self._gz.write(self._header(name, st.st_size, st.st_mtime), 6)
        if level == 0:
            digest, done = self._copy_stored(src)
        else:
            digest, done = self._copy(src, level)
        if done != st.st_size:
            raise PackagingError(f"{src} changed size while it was being packed ({st.st_size} -> {done} bytes)")
        self._pad(done)
        return ArchiveFile(name, digest, done)

    def _pad(self, size: int) -> None:
        """Fill the member's last 512-byte block with zeros."""
        if size % BLOCK:
            self._gz.write(b"\0" * (BLOCK - size % BLOCK), 6)

    def _copy(self, src: Path, level: int) -> tuple[str, int]:
        h = hashlib.sha256()
        done = 0
        with src.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
                self._gz.write(chunk, level)
                done += len(chunk)
                self._chunk_done(len(chunk))
        return h.hexdigest(), done

    def _copy_stored(self, src: Path) -> tuple[str, int]:
        """Hash and CRC each chunk on helper threads while the main thread writes it.

        hashlib and zlib.crc32 release the GIL on large buffers, and so does the write, so the
        three overlap: the cost is close to the largest of them instead of their sum.
        """
        h = hashlib.sha256()
        crc = self._gz.crc
        done = 0
        bufs = (bytearray(CHUNK), bytearray(CHUNK))
        with src.open("rb", buffering=0) as fh, ThreadPoolExecutor(max_workers=2) as pool:
            i = 0
            while True:
                buf = bufs[i % 2]
                n = fh.readinto(buf)
                if not n:
                    break
                view = memoryview(buf)[:n]
                sha_done = pool.submit(h.update, view)
                crc_done = pool.submit(zlib.crc32, view, crc)
                self._gz.write_stored(view)
                sha_done.result()
                crc = crc_done.result()
                done += n
                i += 1
                self._chunk_done(n)
        self._gz.crc = crc
        return h.hexdigest(), done

    def add_bytes(self, name: str, data: bytes) -> ArchiveFile:
        self._gz.write(self._header(name, len(data), time.time()), 6)
        self._gz.write(data, 6)
        self._pad(len(data))
        return ArchiveFile(name, hashlib.sha256(data).hexdigest(), len(data))

    def close(self) -> None:
        self._gz.write(b"\0" * (2 * BLOCK), 6)  # end-of-archive marker
        self._gz.close()


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """``manifest.json`` exactly as packed."""
    return (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()


def archive_size_bound(members: Sequence[tuple[str, Path]]) -> int:
    """An upper bound of the archive's size (for upload part sizes): data, headers, framing, manifest."""
    data = sum(p.stat().st_size for _, p in members)
    # per member: pax + ustar headers and padding; stored blocks: 5 bytes per 64 KiB; deflate of
    # incompressible text: at most 5 bytes per 16 KiB; the manifest: ~200 bytes a file
    return data + data // 3000 + len(members) * 4096 + (4 << 20)


def write_archive(
    members: Sequence[tuple[str, Path]],
    dest: Path,
    manifest: dict[str, Any],
    *,
    log: Callable[[str], object] = print,
    late: Sequence[tuple[str, Callable[[], bytes]]] = (),
    expect: Mapping[str, tuple[str, str]] | None = None,
    follow: Follow | None = None,
    interval: float = DEFAULT_INTERVAL_S,
) -> list[ArchiveFile]:
    """Write ``members`` (archive name, source file) and ``manifest.json`` (last) to ``dest``.

    ``late`` members (archive name, a function returning the content) are packed after the files
    and before the manifest, their content produced at that moment (a build log that grows while
    packing). ``manifest["files"]`` is filled with each member's sha256 and size. ``expect`` maps
    archive names to (sha256, what recorded it): a file whose content no longer has that sha256
    fails the write. ``follow(temp_file, final_bytes)`` is called after each chunk (see the module
    docstring). The archive appears at ``dest`` only when complete; on any failure the partial file
    is removed. Progress: a ``pack:`` line every ``interval`` seconds and one at the end.
    """
    names = [n for n, _ in members] + [n for n, _ in late]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise PackagingError(f"two files would be packed as {', '.join(sorted(dupes))}")
    if "manifest.json" in names:
        raise PackagingError("a packed file is named manifest.json, which the manifest itself needs")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    total = sum(p.stat().st_size for _, p in members)
    files: list[ArchiveFile] = []
    start = time.monotonic()
    meter = ProgressMeter("pack", total, log, interval=interval)
    try:
        with tmp.open("wb", buffering=CHUNK) as raw:

            def published() -> None:
                if follow is not None:
                    raw.flush()
                    follow(tmp, os.lseek(raw.fileno(), 0, os.SEEK_CUR))

            def chunk_done(n: int) -> None:
                meter.add(n)
                meter.tick()
                published()

            writer = _TarGzWriter(raw, chunk_done)
            for name, src in members:
                packed = writer.add_file(name, src)
                want = (expect or {}).get(name)
                if want is not None and packed.sha256 != want[0]:
                    raise PackagingError(
                        f"{name} ({src}) no longer matches {want[1]}: its sha256 is {packed.sha256}, "
                        f"{want[0]} was recorded; nothing was left behind"
                    )
                files.append(packed)
            for name, content in late:
                files.append(writer.add_bytes(name, content()))
            manifest["files"] = [f.as_dict() for f in files]
            writer.add_bytes("manifest.json", manifest_bytes(manifest))
            writer.close()
            published()
            # No fsync: the manifest's checksums catch a file torn by a power loss, and
            # syncing 100+ GiB would double the packing time.
        os.replace(tmp, dest)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        what = {28: "the disk is full", 27: "a file-size limit was hit"}.get(exc.errno or 0, exc.strerror or str(exc))
        raise PackagingError(
            f"could not write the archive {dest}: {what}; nothing was left behind. Free space at "
            f"{dest.parent} (the archive needs about {total / 2**30:.2f} GiB) and run again"
        ) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    meter.finish()
    secs = time.monotonic() - start
    log(f"packed {len(files)} files, {total / 2**20:.1f} MiB, into {dest.name} in {secs:.1f} s")
    return files


def remove_stale_partials(dest: Path, *, log: Callable[[str], None] = print) -> list[Path]:
    """Delete ``.<name>.partial-<pid>`` files next to ``dest`` that a dead run left (its pid is gone).

    A run killed while packing (SIGKILL, a power loss) cannot remove its partial archive itself;
    the next run does. A partial whose pid is alive belongs to a build still packing: kept.
    """
    removed: list[Path] = []
    prefix = f".{dest.name}.partial-"
    try:
        names = os.listdir(dest.parent)
    except OSError:
        return removed
    for name in names:
        pid_text = name[len(prefix) :] if name.startswith(prefix) else ""
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
            continue  # alive (or another user's): not ours to delete
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        path = dest.parent / name
        with contextlib.suppress(FileNotFoundError):
            size = path.stat().st_size
            path.unlink()
            removed.append(path)
            log(f"removed {path} ({size / 2**20:.1f} MiB), a partial archive left by a run that died (pid {pid_text})")
    return removed
