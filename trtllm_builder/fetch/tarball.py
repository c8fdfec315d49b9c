"""cog-trt-llm's ``model_tar_url``: a ``.tar`` (``.gz``, ``.bz2``, ``.xz``) streamed over http(s) into the cache.

The archive is never stored: it is read once from the network (resuming with a Range request if the
connection drops or stalls) and extracted as it arrives (untar.py: safe, bounded work) into a
``.partial`` directory that is renamed into the cache only when complete. The cache key is the URL
plus the server's validator (ETag, else Last-Modified + length), so a replaced tarball behind the
same URL is downloaded anew; without any validator nothing is reused. Every request runs under a
deadline (deadline.py): the headers within :data:`STALL_S` seconds, and then the body must keep
moving (:data:`STALL_BYTES` per :data:`STALL_S`). The URL is shown with its query masked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import requests
import urllib3

from trtllm_builder.deadline import Deadline, Exchange, send
from trtllm_builder.errors import FetchError
from trtllm_builder.fetch import modelcache
from trtllm_builder.fetch.untar import Limits, extract_safely, human
from trtllm_builder.secrets import mask, mask_url, url_secrets

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["fetch_tar", "model_root", "tar_size"]

CONNECT_TIMEOUT = 15.0
STALL_S = 60.0  # headers within this, and then at least STALL_BYTES of body per this
STALL_BYTES = 1 << 20
RESUME_ATTEMPTS = 3
_NET_CHUNK = 1 << 16


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
    url_key = _digest(url)
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
