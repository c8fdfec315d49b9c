"""cog-trt-llm's ``model_tar_url``: a ``.tar`` / ``.tar.gz`` streamed over http(s) and extracted safely.

The archive is never stored: it is read once from the network (resuming with a Range request if the
connection drops), decompressed by content, and extracted member by member into a ``.partial``
directory that is renamed into the cache only when complete. Members that would write outside that
directory (absolute paths, ``..``, links pointing out) or create device files make the whole fetch
fail. The cache key is the URL plus the server's validator (ETag, else Last-Modified + length), so a
replaced tarball behind the same URL is downloaded anew; without any validator nothing is reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import stat
import tarfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

import requests
import urllib3

from . import modelcache
from .configsource import display_url
from .errors import FetchError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["extract_safely", "fetch_tar", "model_root", "tar_size"]

CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 60.0
RESUME_ATTEMPTS = 3
_COPY_CHUNK = 1 << 20


def tar_size(url: str) -> int | None:
    """The tarball's size from a HEAD request, or None if the server does not say."""
    try:
        r = requests.head(url, allow_redirects=True, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
    except requests.RequestException as e:
        raise FetchError(f"cannot reach `model_tar_url` {display_url(url)}: {type(e).__name__}") from e
    if r.status_code in (404, 410):
        raise FetchError(f"`model_tar_url` {display_url(url)} answered HTTP {r.status_code}: check the URL")
    length = r.headers.get("Content-Length", "")
    return int(length) if r.ok and length.isdigit() else None


def fetch_tar(url: str, *, cache_dir: Path, free_disk_multiplier: float, log: Callable[[str], None]) -> Path:
    """The directory of the cached, extracted tarball at ``url`` (downloaded if needed)."""
    shown = display_url(url)
    url_key = hashlib.sha256(url.encode()).hexdigest()[:32]
    entry = modelcache.tar_entry(cache_dir, url_key, "")
    # One lock per URL: two builds fetching the same tarball wait for each other.
    with modelcache.locked(entry, what=f"`model_tar_url` {shown}", log=log):
        response = _get(url, shown, offset=0, if_range=None)
        with response:
            validator = _validator(response)
            if validator is not None:
                entry = modelcache.tar_entry(cache_dir, url_key, _digest(validator))
                if entry.complete:
                    log(f"using cached tarball {shown} ({entry.final})")
                    return model_root(entry.final)
            length = response.headers.get("Content-Length", "")
            if length.isdigit():
                modelcache.check_free_disk(
                    entry.partial.parent,
                    model_bytes=int(length),
                    multiplier=free_disk_multiplier,
                    what=f"`model_tar_url` {shown}",
                )
            shutil.rmtree(entry.partial, ignore_errors=True)
            entry.partial.mkdir(parents=True)
            log(f"downloading and extracting {shown}" + (f" ({int(length) / 1e9:.2f} GB)" if length.isdigit() else ""))
            start = time.monotonic()
            body = _Body(url, shown, response)
            try:
                extract_safely(body, entry.partial)
            except BaseException:
                shutil.rmtree(entry.partial, ignore_errors=True)
                raise
            finally:
                body.response.close()
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
        log(f"extracted {shown}: {body.read_bytes / 1e9:.2f} GB in {elapsed:.1f} s")
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


def _get(url: str, shown: str, *, offset: int, if_range: str | None) -> requests.Response:
    headers = {"Accept-Encoding": "identity"}  # byte offsets must be offsets into the archive itself
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if if_range:  # a server whose file changed since answers 200 with the new file: refused below
            headers["If-Range"] = if_range
    try:
        r = requests.get(url, stream=True, headers=headers, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
    except requests.RequestException as e:
        raise FetchError(f"cannot download `model_tar_url` {shown}: {type(e).__name__}: {e}") from e
    if r.status_code >= 400:
        r.close()
        hint = "check the URL" if r.status_code < 500 else "the server failed; try again"
        raise FetchError(f"`model_tar_url` {shown} answered HTTP {r.status_code}: {hint}")
    if offset and r.status_code != 206:
        r.close()
        raise FetchError(f"the connection to {shown} dropped and the server cannot resume the same file")
    return r


class _Body(io.RawIOBase):
    """The archive bytes, read off the response and resumed with a Range request after a drop."""

    def __init__(self, url: str, shown: str, response: requests.Response) -> None:
        super().__init__()
        self._url, self._shown, self.response = url, shown, response
        self._if_range = response.headers.get("ETag") or response.headers.get("Last-Modified")
        self.read_bytes = 0
        self.sha256 = hashlib.sha256()
        self._attempts = RESUME_ATTEMPTS

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        while True:
            try:
                data = self.response.raw.read(len(view))
                break
            except (urllib3.exceptions.HTTPError, OSError) as e:
                if self._attempts <= 0:
                    raise FetchError(
                        f"download of `model_tar_url` {self._shown} kept failing after "
                        f"{self.read_bytes} bytes ({type(e).__name__}); check the network and run again"
                    ) from e
                self._attempts -= 1
                self.response.close()
                time.sleep(1)
                self.response = _get(self._url, self._shown, offset=self.read_bytes, if_range=self._if_range)
        # urllib3 enforces Content-Length: a body cut short raises above instead of looking like EOF.
        view[: len(data)] = data
        self.read_bytes += len(data)
        self.sha256.update(data)
        return len(data)


def extract_safely(fileobj: IO[bytes] | io.RawIOBase, dest: Path) -> None:
    """Extract the (optionally compressed) tar stream ``fileobj`` into ``dest``, member by member.

    Raises ``FetchError`` for an absolute path, a ``..`` component, a symlink or hardlink that points
    outside ``dest``, or a device / FIFO member.
    """
    root = dest.resolve()
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*", bufsize=_COPY_CHUNK) as tar:
            for member in tar:
                _extract_member(tar, member, root)
    except tarfile.TarError as e:
        raise FetchError(f"the model tarball is not a valid .tar/.tar.gz ({e})") from e
    _verify_links(root)


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


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path) -> None:
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
        shutil.copyfileobj(source_file, out, _COPY_CHUNK)


def _clear(target: Path) -> None:
    """Remove an earlier member of the same name (never following a link), so nothing writes through it."""
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
