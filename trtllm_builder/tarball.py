"""cog-trt-llm's ``model_tar_url``: a ``.tar`` (``.gz``, ``.bz2``, ``.xz``) streamed over http(s) and extracted safely.

The archive is never stored: it is read once from the network (resuming with a Range request if the
connection drops or stalls), decompressed by content, and extracted member by member into a
``.partial`` directory that is renamed into the cache only when complete. Members that would write
outside that directory (absolute paths, ``..``, links pointing out) or create device files make the
whole fetch fail. The cache key is the URL plus the server's validator (ETag, else Last-Modified +
length), so a replaced tarball behind the same URL is downloaded anew; without any validator nothing
is reused.

Bounded work, whatever the tarball holds (see :class:`Limits`): memory stays at a few MiB (the
stream is decompressed with bounded reads, never a whole block at once, and a header larger than
:data:`HEADER_SLACK` is refused); time is linear in the archive; at most ``max_members`` members;
the extracted total at most ``max_ratio`` times the compressed size and what the free disk allows.
Each limit fails fast with its numbers. Every request runs under a deadline (deadline.py): the
headers within :data:`STALL_S` seconds, and the body must keep moving (:data:`STALL_BYTES` per
:data:`STALL_S`).
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import io
import lzma
import os
import shutil
import stat
import tarfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, cast

import requests
import urllib3

from . import modelcache
from .deadline import Deadline, Exchange, send
from .errors import FetchError, PreflightError
from .secrets import mask, mask_url, url_secrets

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["Extracted", "Limits", "extract_safely", "fetch_tar", "model_root", "tar_size"]

CONNECT_TIMEOUT = 15.0
STALL_S = 60.0  # headers within this, and then at least STALL_BYTES of body per this
STALL_BYTES = 1 << 20
RESUME_ATTEMPTS = 3
HEADER_SLACK = 1 << 20  # tar headers (pax, GNU long names) are a few KiB; more is not a model tarball
MAX_MEMBERS_ENV = "TRTLLM_BUILDER_TAR_MAX_MEMBERS"
MAX_RATIO_ENV = "TRTLLM_BUILDER_TAR_MAX_RATIO"
_COPY_CHUNK = 1 << 20
_NET_CHUNK = 1 << 16


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
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _reason(e: BaseException, url: str) -> str:
    """An exception's text with the URL's secrets masked (``requests`` quotes the path and query)."""
    return mask(f"{type(e).__name__}: {e}", url_secrets(url))


def tar_size(url: str) -> int | None:
    """The tarball's size from a HEAD request, or None if the server does not say."""
    shown = mask_url(url)
    try:
        with send(
            "HEAD", url, deadline=Deadline(STALL_S), stream=False, connect_timeout=CONNECT_TIMEOUT,
            read_timeout=STALL_S,
        ) as exchange:  # fmt: skip
            r = exchange.response
    except requests.Timeout as e:
        raise FetchError(f"`model_tar_url` {shown} did not answer within {STALL_S:g} s: check the URL") from e
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
        raise FetchError(f"cannot reach `model_tar_url` {shown}: {type(e).__name__}") from None
    if r.status_code in (404, 410):
        raise FetchError(f"`model_tar_url` {shown} answered HTTP {r.status_code}: check the URL")
    length = r.headers.get("Content-Length", "")
    return int(length) if r.ok and length.isdigit() else None


def fetch_tar(url: str, *, cache_dir: Path, free_disk_multiplier: float, log: Callable[[str], None]) -> Path:
    """The directory of the cached, extracted tarball at ``url`` (downloaded if needed)."""
    shown = mask_url(url)
    limits = Limits.from_env()
    url_key = hashlib.sha256(url.encode()).hexdigest()[:32]
    entry = modelcache.tar_entry(cache_dir, url_key, "")
    # One lock per URL: two builds fetching the same tarball wait for each other.
    with modelcache.locked(entry, what=f"`model_tar_url` {shown}", log=log):
        exchange = _get(url, shown, offset=0, if_range=None)
        body = _Body(url, shown, exchange)
        try:
            validator = _validator(exchange.response)
            if validator is not None:
                entry = modelcache.tar_entry(cache_dir, url_key, _digest(validator))
                if entry.complete:
                    log(f"using cached tarball {shown} ({entry.final})")
                    return model_root(entry.final)
            length = exchange.response.headers.get("Content-Length", "")
            size = int(length) if length.isdigit() else None
            if size is not None:
                modelcache.check_free_disk(
                    entry.partial.parent, model_bytes=size, multiplier=free_disk_multiplier,
                    what=f"`model_tar_url` {shown}",
                )  # fmt: skip
            shutil.rmtree(entry.partial, ignore_errors=True)
            entry.partial.mkdir(parents=True)
            disk = int(shutil.disk_usage(entry.partial).free / max(free_disk_multiplier, 1.0))
            log(f"downloading and extracting {shown}" + (f" ({human(size)})" if size is not None else ""))
            start = time.monotonic()
            try:
                done = extract_safely(
                    body, entry.partial, limits=limits, compressed_size=size, disk_bytes=disk,
                    disk_multiplier=free_disk_multiplier, what=f"the model tarball {shown}",
                )  # fmt: skip
            except BaseException:
                shutil.rmtree(entry.partial, ignore_errors=True)
                raise
        finally:
            body.exchange.close()
        if validator is None:  # keyed by content: reused only if the very same bytes were seen before
            final = entry.final.with_name(f"{url_key}-{body.sha256.hexdigest()[:32]}")
            entry = dataclasses.replace(entry, final=final)
        root = model_root(entry.partial)
        if not (root / "config.json").is_file():
            shutil.rmtree(entry.partial, ignore_errors=True)
            raise FetchError(
                f"the tarball {shown} has no config.json at its top level (or in its single top-level "
                "folder): pack the Hugging Face model directory itself"
            )
        if entry.complete:
            shutil.rmtree(entry.partial, ignore_errors=True)
        else:
            modelcache.publish(entry)
        elapsed = max(time.monotonic() - start, 1e-6)
        log(
            f"extracted {shown}: {done.members} members, {human(done.bytes)} from {human(body.read_bytes)} "
            f"in {elapsed:.1f} s"
        )
    return model_root(entry.final)


def model_root(root: Path) -> Path:
    """The single top-level folder of an extracted archive, if it has exactly one entry and it is a dir."""
    entries = [p for p in root.iterdir() if p.name not in (".", "..")]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return root


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _validator(response: requests.Response) -> str | None:
    etag = response.headers.get("ETag")
    if etag:
        return f"etag:{etag}"
    modified = response.headers.get("Last-Modified")
    if modified:
        return f"modified:{modified}:{response.headers.get('Content-Length', '')}"
    return None


def _get(url: str, shown: str, *, offset: int, if_range: str | None) -> Exchange:
    headers = {"Accept-Encoding": "identity"}  # byte offsets must be offsets into the archive itself
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if if_range:  # a server whose file changed since answers 200 with the new file: refused below
            headers["If-Range"] = if_range
    deadline = Deadline(STALL_S, progress_bytes=STALL_BYTES)
    try:
        exchange = send(
            "GET", url, deadline=deadline, headers=headers, connect_timeout=CONNECT_TIMEOUT, read_timeout=STALL_S
        )
    except requests.Timeout as e:
        raise FetchError(
            f"`model_tar_url` {shown} did not answer within {STALL_S:g} s (no complete headers): check the URL, "
            "and that the server is up"
        ) from e
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
        raise FetchError(f"cannot download `model_tar_url` {shown}: {_reason(e, url)}") from None
    deadline.extend(STALL_S)  # the body now: it must keep moving
    r = exchange.response
    if r.status_code >= 400:
        exchange.close()
        hint = "check the URL" if r.status_code < 500 else "the server failed; try again"
        raise FetchError(f"`model_tar_url` {shown} answered HTTP {r.status_code}: {hint}")
    if offset and r.status_code != 206:
        exchange.close()
        raise FetchError(f"the connection to {shown} dropped and the server cannot resume the same file")
    return exchange


class _Body(io.RawIOBase):
    """The archive bytes, read off the response and resumed with a Range request after a drop or a stall."""

    def __init__(self, url: str, shown: str, exchange: Exchange) -> None:
        super().__init__()
        self._url, self._shown = url, shown
        headers = exchange.response.headers
        self._if_range = headers.get("ETag") or headers.get("Last-Modified")
        self.read_bytes = 0
        self.sha256 = hashlib.sha256()
        self._attempts = RESUME_ATTEMPTS
        self._use(exchange)

    def _use(self, exchange: Exchange) -> None:
        self.exchange = exchange
        length = exchange.response.headers.get("Content-Length", "")
        self._end = self.read_bytes + int(length) if length.isdigit() else None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        while True:
            try:
                data = self.exchange.response.raw.read(min(len(view), _NET_CHUNK))
                failure: str | None = None
            except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as e:
                data, failure = b"", _reason(e, self._url)
            if data:
                break
            if failure is None and not self.exchange.deadline.expired:
                if self._end is None or self.read_bytes >= self._end:
                    return 0  # the real end (urllib3 1.x does not check Content-Length: done here)
                failure = f"the connection closed at byte {self.read_bytes} of {self._end}"
            if self.exchange.deadline.expired:
                failure = f"less than {human(STALL_BYTES)} arrived in {STALL_S:g} s"
            if self._attempts <= 0:
                raise FetchError(
                    f"download of `model_tar_url` {self._shown} kept failing after {self.read_bytes} bytes "
                    f"({failure}); check the network and run again"
                )
            self._attempts -= 1
            self.exchange.close()
            time.sleep(1)
            self._use(_get(self._url, self._shown, offset=self.read_bytes, if_range=self._if_range))
        self.exchange.deadline.progress(len(data))
        view[: len(data)] = data
        self.read_bytes += len(data)
        self.sha256.update(data)
        return len(data)


# --- bounded extraction -------------------------------------------------------------------------------


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
    buffered = io.BufferedReader(source, _NET_CHUNK)
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
