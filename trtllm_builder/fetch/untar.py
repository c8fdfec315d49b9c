"""Extract a tar stream safely and with bounded work, whatever it holds.

Safe: members that would write outside the destination (absolute paths, ``..``, links pointing out,
a path through a link re-pointed by a later member) or create device files make the extraction
fail. Bounded (see :class:`Limits`): memory stays at a few MiB (the stream is decompressed with
bounded reads, never a whole block at once, and a header larger than :data:`HEADER_SLACK` is
refused); time is linear in the archive; at most ``max_members`` members; the extracted total at
most ``max_ratio`` times the compressed size and what the disk allows. Each limit fails fast with
its numbers. The stream's compression (gzip, bzip2, xz, or none) is read from its first bytes.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import io
import lzma
import os
import shutil
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, cast

from trtllm_builder.errors import FetchError, PreflightError
from trtllm_builder.progress import format_bytes

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["HEADER_SLACK", "MAX_MEMBERS_ENV", "MAX_RATIO_ENV", "Extracted", "Limits", "extract_safely", "human"]

HEADER_SLACK = 1 << 20  # tar headers (pax, GNU long names) are a few KiB; more is not a model tarball
MAX_MEMBERS_ENV = "TRTLLM_BUILDER_TAR_MAX_MEMBERS"
MAX_RATIO_ENV = "TRTLLM_BUILDER_TAR_MAX_RATIO"
_COPY_CHUNK = 1 << 20
_READ_CHUNK = 1 << 16


@dataclass(frozen=True)
class Limits:
    """What a model tarball may expand to. A model directory has a few dozen files, and weights
    (dense fp16/bf16/int8 tensors) barely compress: 50x is far above any real model, far below a bomb."""

    max_members: int = 10_000
    max_ratio: float = 50.0  # extracted bytes / compressed bytes
    floor_bytes: int = 64 << 20  # below this total the ratio is not enforced (tiny, text-only archives)

    @classmethod
    def from_env(cls) -> Limits:
        """The defaults, or ``$TRTLLM_BUILDER_TAR_MAX_MEMBERS`` / ``$TRTLLM_BUILDER_TAR_MAX_RATIO``."""
        values: dict[str, float] = {}
        for env, key, kind in ((MAX_MEMBERS_ENV, "max_members", int), (MAX_RATIO_ENV, "max_ratio", float)):
            raw = os.environ.get(env, "").strip()
            if not raw:
                continue
            try:
                value = kind(raw)
            except ValueError:
                value = 0
            if not value > 0:
                raise FetchError(f"${env} must be a positive number, got `{raw}`")
            values[key] = value
        return dataclasses.replace(cls(), **values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Extracted:
    members: int
    bytes: int  # file data written


def human(n: float) -> str:
    """``2.0 GiB``, ``2.1 MiB``, ``512 B``."""
    return format_bytes(n, binary=True)


class _Source(io.RawIOBase):
    """Reads ``fileobj`` and counts the (compressed) bytes read."""

    def __init__(self, fileobj: IO[bytes] | io.RawIOBase) -> None:
        super().__init__()
        self._fileobj = fileobj
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._fileobj.read(len(view)) or b""
        view[: len(data)] = data
        self.count += len(data)
        return len(data)


class _Tarstream(io.RawIOBase):
    """The decompressed tar stream, read in bounded pieces; refuses to run ahead of the members.

    tarfile reads a pax header or a GNU long name whole, however large it claims to be: the
    stream refuses to deliver more than :data:`HEADER_SLACK` bytes past the end of the last
    member's data, so no header can make it buffer more than that.
    """

    def __init__(self, inner: io.BufferedIOBase | IO[bytes], kind: str, what: str) -> None:
        super().__init__()
        self._inner, self._kind, self._what = inner, kind, what
        self.position = 0
        self.allowed = HEADER_SLACK

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self.allowed - self.position + 1)
        if want <= 0 or self.position >= self.allowed:
            raise FetchError(
                f"{self._what} has a tar header larger than {human(HEADER_SLACK)} (a pax header or long name "
                "that big is no model's): refusing it"
            )
        try:
            data = self._inner.read(want)
        except FetchError:
            raise
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:
            raise FetchError(f"{self._what} is not a valid {self._kind} stream ({e})") from None
        view[: len(data)] = data
        self.position += len(data)
        return len(data)


def _decompressed(magic: bytes, source: IO[bytes]) -> tuple[io.BufferedIOBase | IO[bytes], str]:
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=source, mode="rb"), "gzip"
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(source, mode="rb"), "bzip2"
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(source, mode="rb"), "xz"
    if magic.startswith(b"\x28\xb5\x2f\xfd"):
        raise FetchError("the model tarball is zstd-compressed, which is not supported: use .tar, .tar.gz or .tar.xz")
    return source, "tar"


class _Meter:
    """Counts members and extracted bytes against the limits; every refusal carries its numbers."""

    def __init__(
        self,
        limits: Limits,
        source: _Source,
        *,
        compressed_size: int | None,
        disk_bytes: int | None,
        disk_multiplier: float,
        what: str,
    ) -> None:
        self.limits, self.source, self.what = limits, source, what
        self.compressed_size, self.disk_bytes, self.disk_multiplier = compressed_size, disk_bytes, disk_multiplier
        self.members = 0
        self.written = 0

    def member(self, member: tarfile.TarInfo) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise FetchError(
                f"{self.what} has more than {self.limits.max_members} members (stopped at `{member.name}`, "
                f"{human(self.source.count)} into the download): a model directory holds a few dozen files, "
                f"so this is no model tarball (or a tarball bomb). Pack the model directory alone; if it is "
                f"genuine, raise the limit with ${MAX_MEMBERS_ENV}"
            )
        if member.isfile():
            self._check(self.written + member.size, declared=member)

    def wrote(self, n: int) -> None:
        self.written += n
        self._check(self.written, declared=None)

    def _check(self, total: int, *, declared: tarfile.TarInfo | None) -> None:
        if self.disk_bytes is not None and total > self.disk_bytes:
            raise PreflightError(
                f"not enough disk space for {self.what}: it expands to more than {human(total)}, and the build "
                f"needs about {self.disk_multiplier:g}x the model while the cache's disk has room for "
                f"{human(self.disk_bytes)} of it; free some space or point the cache at a larger disk"
            )
        # Against the whole tarball's size when the server said it; else against what was read so far
        # (only for bytes actually written: a first member may rightly declare most of the archive).
        base = self.compressed_size if self.compressed_size is not None else None if declared else self.source.count
        if base is None:
            return
        cap = max(self.limits.max_ratio * base, self.limits.floor_bytes)
        if total > cap:
            if declared is not None:
                grew = (
                    f"with `{declared.name}` ({human(declared.size)}) it holds {human(total)}, "
                    f"from a {human(base)} tarball"
                )
            else:
                grew = f"{human(total)} extracted from its first {human(base)}"
            raise FetchError(
                f"{self.what} expands too far: {grew} ({total / max(base, 1):.0f}x; model files compress less "
                f"than {self.limits.max_ratio:g}x): a decompression bomb, or not a model. If it is genuine, raise "
                f"the limit with ${MAX_RATIO_ENV}"
            )


def extract_safely(
    fileobj: IO[bytes] | io.RawIOBase,
    dest: Path,
    *,
    limits: Limits | None = None,
    compressed_size: int | None = None,
    disk_bytes: int | None = None,
    disk_multiplier: float = 1.0,
    what: str = "the model tarball",
) -> Extracted:
    """Extract the (optionally compressed) tar stream ``fileobj`` into ``dest``, member by member.

    Raises ``FetchError`` for an absolute path, a ``..`` component, a symlink or hardlink that points
    outside ``dest``, a device / FIFO member, or a tarball beyond ``limits`` (members, the ratio of
    extracted to ``compressed_size`` or to the bytes read so far); ``PreflightError`` when the total
    exceeds ``disk_bytes``. Memory stays bounded and time linear whatever the stream holds.
    """
    root = dest.resolve()
    source = _Source(fileobj)
    buffered = io.BufferedReader(source, _READ_CHUNK)
    inner, kind = _decompressed(buffered.peek(6)[:6], cast("IO[bytes]", buffered))
    stream = _Tarstream(inner, kind, what)
    meter = _Meter(
        limits or Limits(), source, compressed_size=compressed_size, disk_bytes=disk_bytes,
        disk_multiplier=disk_multiplier, what=what,
    )  # fmt: skip
    try:
        # RECORDSIZE, not more: tarfile's stream copies its whole buffer on every read (each 512-byte
        # header), so a large buffer makes many small members quadratic.
        with tarfile.open(fileobj=stream, mode="r|", bufsize=tarfile.RECORDSIZE) as tar:
            for member in tar:
                meter.member(member)
                stream.allowed = member.offset_data + _blocks(member.size) + HEADER_SLACK
                _extract_member(tar, member, root, meter)
    except tarfile.TarError as e:
        raise FetchError(f"{what} is not a valid .tar/.tar.gz ({e})") from None
    _verify_links(root)
    return Extracted(meter.members, meter.written)


def _blocks(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _verify_links(root: Path) -> None:
    """Each link was checked when created, but a later link can re-point a path an earlier one goes through."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink() and not _inside(root, Path(os.path.realpath(path))):
                raise FetchError(
                    f"unsafe member in the model tarball: symlink `{path.relative_to(root)}` points outside it "
                    f"(`{os.readlink(path)}`)"
                )


def _safe_name(name: str, what: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise FetchError(f"unsafe member in the model tarball: {what} `{name}` is an absolute path")
    if ".." in path.parts:
        raise FetchError(f"unsafe member in the model tarball: {what} `{name}` contains `..`")
    return path


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path, meter: _Meter) -> None:
    rel = _safe_name(member.name, "path")
    if rel.parts in ((), (".",)):
        return
    target = root.joinpath(*rel.parts)
    # A parent may be a symlink extracted earlier: where would this member physically land?
    parent = Path(os.path.realpath(target.parent))
    if not _inside(root, parent):
        raise FetchError(f"unsafe member in the model tarball: `{member.name}` would be written outside it")
    target = parent / target.name
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    if member.issym():
        link = PurePosixPath(member.linkname)
        if link.is_absolute() or not _inside(root, Path(os.path.realpath(parent / link))):
            raise FetchError(
                f"unsafe member in the model tarball: symlink `{member.name}` points outside it (`{member.linkname}`)"
            )
        _clear(target)
        os.symlink(member.linkname, target)
        return
    if member.islnk():
        source = Path(os.path.realpath(root.joinpath(*_safe_name(member.linkname, "hardlink target").parts)))
        if not _inside(root, source) or not source.is_file():
            raise FetchError(
                f"unsafe member in the model tarball: hardlink `{member.name}` points outside it "
                f"or at nothing extracted before it (`{member.linkname}`)"
            )
        _clear(target)
        os.link(source, target)
        return
    if not member.isfile():
        raise FetchError(
            f"unsafe member in the model tarball: `{member.name}` is a device or FIFO; a model has only files, "
            "directories and links"
        )
    source_file = tar.extractfile(member)
    if source_file is None:  # pragma: no cover - isfile() members always have data
        raise FetchError(f"cannot read `{member.name}` from the model tarball")
    parent.mkdir(parents=True, exist_ok=True)
    _clear(target)
    mode = 0o755 if member.mode & stat.S_IXUSR else 0o644
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as out:
        while chunk := source_file.read(_COPY_CHUNK):
            out.write(chunk)
            meter.wrote(len(chunk))


def _clear(target: Path) -> None:
    """Remove an earlier member of the same name (never following a link), so nothing writes through it."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(target)
    else:
        target.unlink()
