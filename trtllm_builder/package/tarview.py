"""What ``tar -xzf`` extracts from a ``.tar.gz``, read once as a stream, and what looks tampered with.

``inspect`` must judge the files a user gets when they unpack the archive, not what one reader
happens to see. Python's ``tarfile`` in stream mode stops after the first gzip member, while
``gzip -d`` (and so ``tar -xzf``) decompresses every member of a concatenation: an archive whose
first member holds the genuine files and manifest (without end-of-archive blocks) and whose
second member holds a replaced ``rank0.engine`` unpacks to the replacement. So this module:

* decompresses every gzip member in turn, as ``gzip -d`` does (CRC and length checked by zlib),
  and counts them; anything after the last member is reported;
* walks the tar headers itself (each 512-byte header parsed by the public
  :meth:`tarfile.TarInfo.frombuf`; pax ``path``/``linkpath``/``size`` records and GNU long names
  applied as GNU tar applies them), hashing each regular file's data as it passes;
* keeps, per name, the *last* occurrence (tar overwrites earlier ones) and reports what
  trtllm-builder never writes and tar could unpack differently: more than one gzip member, data
  after the gzip stream or after the end-of-archive marker, a missing end-of-archive marker,
  duplicate names, links and special files, names that escape the target dir, global or sparse
  headers, and names that tar implementations read differently.

Behaviour checked against GNU tar 1.34 (``tar -xzf``) by tests/test_inspect.py.
"""

from __future__ import annotations

import hashlib
import posixpath
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from trtllm_builder.errors import VerifyError

__all__ = ["ArchiveView", "scan_archive"]

BLOCK = tarfile.BLOCKSIZE
_CHUNK = 1 << 20
_ZERO_BLOCK = bytes(BLOCK)
_GZIP_MAGIC = b"\x1f\x8b"
_POSIX_MAGIC = b"ustar\x00"
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_PAX = (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE)
_LONG = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
_HEADER_DATA_MAX = 1 << 20  # pax records and GNU long names: a few hundred bytes in practice


class _Truncated(Exception):
    pass


@dataclass
class ArchiveView:
    """The files ``tar -xzf`` would leave (name -> (sha256, size)) and what was odd about the archive.

    ``captured`` holds the content of the members named in ``scan_archive(capture=...)`` (their last
    occurrence), cut at ``capture_max`` bytes plus one so an oversized one can be told apart.
    """

    files: dict[str, tuple[str, int]] = field(default_factory=dict)
    captured: dict[str, bytes] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    gzip_members: int = 0


def scan_archive(
    path: Path,
    *,
    capture: Callable[[str, int], bool] = lambda _name, _size: False,
    capture_max: int = 64 << 20,
) -> ArchiveView:
    """Read ``path`` as ``tar -xzf`` would. Raises :class:`VerifyError` when it cannot be read at all.

    ``capture``: a predicate of (name, size): whether to keep the member's content.
    """
    view = ArchiveView()
    try:
        with path.open("rb") as fh:
            gz = _Gunzip(fh)
            try:
                _walk(gz, view, capture, capture_max)
            finally:
                view.gzip_members = gz.members
            if gz.members > 1:
                view.problems.insert(
                    0,
                    f"the archive is {gz.members} gzip streams joined together, and `tar -xzf` unpacks them all "
                    "(a later one can replace files of an earlier one); trtllm-builder writes exactly one",
                )
            if gz.trailing:
                view.problems.insert(
                    0,
                    f"{gz.trailing} byte(s) follow the gzip data (`gzip -d` warns 'trailing garbage ignored' and tar "
                    "exits 2); trtllm-builder writes none",
                )
    except FileNotFoundError as exc:
        raise VerifyError(f"{path} does not exist") from exc
    except IsADirectoryError as exc:
        raise VerifyError(f"{path} is a directory, not an archive") from exc
    except (_Truncated, EOFError, zlib.error, OSError) as exc:
        detail = str(exc) or "it ends in the middle of a member"
        raise VerifyError(
            f"cannot read {path} as a tar.gz archive ({detail}); it is truncated or not an archive: "
            "download it again or rebuild it"
        ) from exc
    return view


class _Gunzip:
    """Every gzip member of a file, decompressed in turn (like ``gzip -d``), read in bounded pieces."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self._buf = b""  # compressed input not yet fed to zlib
        self._d: zlib._Decompress | None = None
        self._done = False
        self.members = 0
        self.trailing = 0  # bytes after the last member that do not start another one

    def _more(self, want: int) -> bool:
        while len(self._buf) < want:
            data = self._fh.read(_CHUNK)
            if not data:
                return False
            self._buf += data
        return True

    def _begin(self) -> bool:
        """Start the next member; False at the end of the file (or of the gzip data)."""
        if self._done:
            return False
        if not self._more(1):
            self._done = True
            if self.members == 0:
                raise _Truncated("the file is empty")
            return False
        if not self._more(2) or not self._buf.startswith(_GZIP_MAGIC):
            if self.members == 0:
                raise _Truncated("not gzip data")
            self.trailing = len(self._buf)
            while data := self._fh.read(_CHUNK):
                self.trailing += len(data)
            self._buf = b""
            self._done = True
            return False
        self.members += 1
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # a gzip header and trailer (CRC32, length) are checked
        return True

    def read(self, n: int) -> bytes:
        """Up to ``n`` decompressed bytes; ``b""`` only at the end of all members."""
        if n <= 0:
            return b""
        while True:
            if self._d is None and not self._begin():
                return b""
            d = self._d
            if d is None:  # pragma: no cover (_begin sets it)
                return b""
            if not self._buf and not self._more(1):
                raise _Truncated("the gzip data ends in the middle of a member")
            out = d.decompress(self._buf, n)
            if d.eof:
                self._buf = d.unused_data
                self._d = None
            else:
                self._buf = d.unconsumed_tail
            if out:
                return out

    def read_exact(self, n: int) -> bytes:
        parts: list[bytes] = []
        left = n
        while left:
            data = self.read(min(left, _CHUNK))
            if not data:
                raise _Truncated(f"the tar data ends {left} byte(s) before the end of a member")
            parts.append(data)
            left -= len(data)
        return b"".join(parts)


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(data: bytes) -> dict[str, str]:
    """``"<len> <key>=<value>\\n"`` records; ``ValueError`` on a malformed one."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        record = data[space + 1 : pos + length]
        if length < 5 or pos + length > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise ValueError("malformed pax record")
        key, _, value = record[:-1].partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def _safe_name(raw: str) -> str | None:
    """The path tar extracts to, normalised; None for one that is absolute or climbs out with ``..``."""
    if not raw or raw.startswith("/") or ".." in raw.split("/"):
        return None
    name = posixpath.normpath(raw)
    return None if name in (".", "..") or name.startswith("../") else name


def _walk(gz: _Gunzip, view: ArchiveView, wanted: Callable[[str, int], bool], capture_max: int) -> None:
    problems = view.problems
    pending: dict[str, str] = {}  # pax records and GNU long names for the next member
    dirs: set[str] = set()
    while True:
        block = _read_block(gz)
        if block is None:
            problems.append(
                "no end-of-archive marker: the tar data stops right after a member, as when it is cut short "
                "or is the first part of a concatenation; trtllm-builder always writes one"
            )
            return
        if block == _ZERO_BLOCK:
            _check_after_end(gz, problems)
            return
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            raise _Truncated(f"a damaged tar header ({exc})") from None
        kind, size = info.type, info.size
        if kind in _PAX or kind in _LONG or kind == tarfile.XGLTYPE:
            if size > _HEADER_DATA_MAX:
                raise _Truncated(f"an extended header of {size} bytes")
            data = gz.read_exact(size + (-size % BLOCK))[:size]
            if kind == tarfile.XGLTYPE:
                problems.append("a global pax header (it changes every later member); trtllm-builder writes none")
                continue
            if kind in _LONG:
                pending["linkpath" if kind == tarfile.GNUTYPE_LONGLINK else "path"] = _text(data)
                continue
            try:
                pending.update(_pax_records(data))
            except ValueError:
                raise _Truncated("a malformed pax header") from None
            continue
        records, pending = pending, {}
        prefix = _text(block[345:500])
        raw_name = _text(block[:100])
        if block[257:263] == _POSIX_MAGIC:
            header_name = f"{prefix}/{raw_name}" if prefix else raw_name
        else:
            header_name = raw_name
            if prefix:  # GNU tar reads these bytes as times there, Python's tarfile as part of the name
                problems.append(f"{raw_name!r}: a header whose name tar implementations read differently")
        raw = records.get("path", header_name)
        if "size" in records:
            try:
                size = int(records["size"])
            except ValueError:
                raise _Truncated("a pax size that is not a number") from None
        if any(k.startswith("GNU.sparse") for k in records) or kind == tarfile.GNUTYPE_SPARSE:
            problems.append(
                f"{raw!r}: a sparse file (tar readers disagree on where its data ends, so reading stopped here); "
                "trtllm-builder archives hold plain files only"
            )
            return
        name = _safe_name(raw.rstrip("/") if kind == tarfile.DIRTYPE else raw)
        if name is None:
            problems.append(f"unsafe member path {raw!r} (absolute or with ..): it would land outside the target dir")
        if kind == tarfile.DIRTYPE:
            if size:
                problems.append(f"{raw!r}: a directory entry with {size} bytes of data; tar readers disagree on it")
                return
            if name is not None:
                if name in view.files:
                    problems.append(f"{name}: appears as a file and as a directory")
                dirs.update(_with_parents(name))
            continue
        if kind not in _REGULAR:
            what = {
                tarfile.SYMTYPE: "symbolic link",
                tarfile.LNKTYPE: "hard link",
                tarfile.CHRTYPE: "character device",
                tarfile.BLKTYPE: "block device",
                tarfile.FIFOTYPE: "FIFO",
            }.get(kind, f"member of unknown type {kind!r}")
            target = records.get("linkpath", info.linkname)
            to = f" to {target!r}" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            problems.append(f"{raw}: a {what}{to}; trtllm-builder archives hold regular files only")
            linked = _safe_name(target) if kind == tarfile.LNKTYPE else None
            if name is not None and linked is not None and linked in view.files:
                view.files[name] = view.files[linked]  # tar makes a second name for the same file
            if size:
                problems.append(f"{raw!r}: a {what} with {size} bytes of data; tar readers disagree on where it ends")
                return
            continue
        if raw.endswith("/"):
            problems.append(f"{raw!r}: a regular file whose name ends in `/`; tar readers disagree on it")
        digest, captured = _consume(gz, size, capture_max if name is not None and wanted(name, size) else None)
        if name is None:
            continue
        if name in view.files:
            problems.append(f"{name}: appears twice in the archive (tar keeps the last one, which is what is checked)")
        parents = _with_parents(posixpath.dirname(name))
        for folder in sorted(parents & view.files.keys()):
            problems.append(f"{name}: its folder {folder} is a file in the archive")
        if name in dirs:
            problems.append(f"{name}: appears as a file and as a directory")
        dirs.update(parents)
        view.files[name] = (digest, size)
        if captured is not None:
            view.captured[name] = captured


def _with_parents(name: str) -> set[str]:
    """``a/b/c`` -> ``{a/b/c, a/b, a}``; ``""`` -> nothing."""
    out: set[str] = set()
    while name:
        out.add(name)
        name = posixpath.dirname(name)
    return out


def _read_block(gz: _Gunzip) -> bytes | None:
    """The next 512-byte block, or None at a clean end of the data."""
    first = gz.read(BLOCK)
    if not first:
        return None
    return first + gz.read_exact(BLOCK - len(first)) if len(first) < BLOCK else first


def _consume(gz: _Gunzip, size: int, capture_max: int | None) -> tuple[str, bytes | None]:
    digest = hashlib.sha256()
    kept = bytearray() if capture_max is not None else None
    left = size
    while left:
        data = gz.read(min(left, _CHUNK))
        if not data:
            raise _Truncated(f"the tar data ends {left} byte(s) before the end of a member")
        digest.update(data)
        if kept is not None and capture_max is not None and len(kept) <= capture_max:
            kept += data[: capture_max + 1 - len(kept)]
        left -= len(data)
    gz.read_exact(-size % BLOCK)
    return digest.hexdigest(), None if kept is None else bytes(kept)


def _check_after_end(gz: _Gunzip, problems: list[str]) -> None:
    """After the first zero block tar stops; anything but zeros after it is hidden data."""
    hidden = 0
    while data := gz.read(_CHUNK):
        if data.count(0) != len(data):
            hidden += len(data) - data.count(0)
    if hidden:
        problems.append(
            f"{hidden} non-zero byte(s) after the end-of-archive marker: tar ignores them; trtllm-builder writes none"
        )
