"""Upload an archive to S3 (or any S3-compatible store) while it is written, and prove it arrived intact.

The local archive is only ever read: whatever happens, it stays where it is (DJL's
partition tool deletes its local copy after an upload whose exit code it ignores).

With ``output.upload`` the upload overlaps packing (:func:`pack_and_upload`): the packer only
appends to its temp file and says after each chunk how many bytes are final; an
:class:`ArchiveUpload` thread reads each full part from the file as soon as it is there and a
few workers send parts meanwhile, so engine-ready -> uploaded takes about the longer of packing
and uploading, not their sum. The part size is fixed up front from an upper bound of the
archive's size (S3 allows 10,000 parts of at least 5 MiB, the last one smaller).

How an upload is verified:

* it is a multipart upload, each part with its own SHA-256 checksum; the checksum the server
  reports back for a part must equal ours;
* the archive's sha256 is computed over the bytes as they are sent; afterwards a HEAD must
  report the local archive's size and the composite SHA-256 (sha256 of the parts' digests) we
  computed; a store that reports no checksum gets the object streamed back and hashed instead;
* then ``<name>.sha256`` is written beside the object (``sha256sum`` format), so anyone can check
  a download with ``sha256sum -c``. (Object metadata cannot carry the archive's sha256 any more:
  it must be given when the upload starts, before the archive is written.)

Progress: an ``upload:`` line at least every 5 s and at the end. Lines from the upload's threads
(retries) are queued and printed by the thread that calls :meth:`ArchiveUpload.written` /
:meth:`ArchiveUpload.finish`, the one that owns the log (under Cog, the prediction's thread).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtllm_builder.errors import UploadError
from trtllm_builder.outputs.s3 import (
    Failed,
    Retrier,
    S3Credentials,
    Transient,
    abort_multipart,
    make_client,
    parse_s3_url,
    redact,
)
from trtllm_builder.package.archive import ArchiveFile, archive_size_bound, write_archive
from trtllm_builder.progress import DEFAULT_INTERVAL_S, ProgressMeter

__all__ = [
    "MIN_PART_SIZE",
    "ArchiveUpload",
    "S3Credentials",
    "UploadResult",
    "pack_and_upload",
    "parse_s3_url",
    "upload_archive",
]

MIN_PART_SIZE = 8 * 1024 * 1024
WORKERS = 4  # parts in flight at once
_CHUNK = 1024 * 1024
_MAX_PARTS = 10_000  # S3's limit
Log = Callable[[str], object]


@dataclass(frozen=True)
class UploadResult:
    """Where the archive went, and what was verified there (``checksum_url``: the sha256sum file)."""

    url: str
    key: str
    size: int
    sha256: str
    etag: str
    checksum_url: str


def pack_and_upload(
    members: Sequence[tuple[str, Path]],
    dest: Path,
    manifest: dict[str, Any],
    url: str,
    *,
    credentials: S3Credentials | None,
    log: Log = print,
    late: Sequence[tuple[str, Callable[[], bytes]]] = (),
    expect: Mapping[str, tuple[str, str]] | None = None,
    interval: float = DEFAULT_INTERVAL_S,
    **upload_options: Any,
) -> tuple[list[ArchiveFile], UploadResult]:
    """:func:`.package.write_archive` to ``dest`` while its parts go to ``url`` (see the module docstring).

    A packing failure aborts the upload; an upload failure lets packing finish and raises
    :class:`UploadError` naming the complete local archive, which is kept. ``upload_options`` go to
    :class:`ArchiveUpload` (``retries``, ``part_size``, ``workers``, ...).
    """
    upload = ArchiveUpload(
        url,
        dest.name,
        credentials=credentials,
        size_hint=archive_size_bound(members),
        log=log,
        interval=interval,
        **upload_options,
    )
    upload.start()
    try:
        files = write_archive(
            members, dest, manifest, log=log, late=late, expect=expect, follow=upload.written, interval=interval
        )
    except BaseException:
        upload.cancel()
        raise
    return files, upload.finish(dest, dest.stat().st_size)


def upload_archive(
    path: Path,
    url: str,
    *,
    credentials: S3Credentials | None,
    log: Log = print,
    **upload_options: Any,
) -> UploadResult:
    """Upload the complete file ``path`` to ``s3://bucket/prefix/<file name>`` and verify it there.

    ``credentials`` ``None`` uses boto3's default chain; the endpoint comes from
    ``credentials.endpoint_url``, else ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``. Raises
    :class:`UploadError` (the local file is kept, untouched). ``upload_options``: see
    :class:`ArchiveUpload`.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        size, problem = 0, f"cannot read the local archive ({exc.strerror or exc})"
    else:
        problem = "the local archive is empty" if size == 0 else ""
    upload = ArchiveUpload(url, path.name, credentials=credentials, size_hint=size, log=log, **upload_options)
    if problem:
        raise upload.error(problem, path)
    upload.start()
    return upload.finish(path, size)


class ArchiveUpload:
    """A multipart upload that follows a file while it is written, then completes and verifies it.

    Call :meth:`start`, then :meth:`written` as the file grows (from the thread that owns the
    log: it also prints progress), then :meth:`finish` with the final size, or :meth:`cancel`.
    Each request is retried ``retries`` times on transient errors, with exponential backoff from
    ``backoff_s``; ``workers`` parts are in flight at once (memory: about ``workers + 1`` parts).
    ``verify_by_download`` also streams the object back and hashes it.
    """

    def __init__(
        self,
        url: str,
        name: str,
        *,
        credentials: S3Credentials | None,
        size_hint: int,
        log: Log = print,
        retries: int = 3,
        backoff_s: float = 1.0,
        part_size: int | None = None,
        workers: int = WORKERS,
        verify_by_download: bool = False,
        interval: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.bucket, prefix = parse_s3_url(url)
        self.key = prefix + name
        self.target = f"s3://{self.bucket}/{self.key}"
        self._name = name
        self._credentials = credentials
        self._secrets = credentials.secrets() if credentials else []
        self._log = log
        self._part = _part_size(size_hint, part_size)
        self._workers = max(1, workers)
        self._verify_by_download = verify_by_download
        self._notes: collections.deque[str] = collections.deque()
        self._run = Retrier(retries=retries, backoff_s=backoff_s, log=self._notes.append, secrets=self._secrets)
        self._meter = ProgressMeter("upload", size_hint, log, interval=interval)
        self._cond = threading.Condition()
        self._fd: int | None = None
        self._mark = 0  # bytes of the file that are final
        self._final: int | None = None
        self._stop = False
        self._failed = threading.Event()
        self._error: str | None = None
        self._upload_id: str | None = None
        self._client: Any = None
        self._result: UploadResult | None = None
        self._thread = threading.Thread(target=self._main, name=f"upload {name}", daemon=True)

    @property
    def uploaded(self) -> int:
        """Bytes of parts the store has confirmed so far."""
        return self._meter.done

    def start(self) -> None:
        """Set up the client (a malformed endpoint fails here) and start the upload's thread."""
        try:
            self._client = make_client(self._credentials, max_pool=self._workers + 2)
        except ValueError as exc:  # botocore raises ValueError for a malformed endpoint URL or region
            raise self.error(f"cannot set up the S3 client: {exc}", None) from None
        self._log(
            f"uploading to {self.target} while the archive is written: parts of {_mib(self._part)}, "
            f"{self._workers} at a time, each with its SHA-256 checksum"
        )
        self._thread.start()

    def written(self, path: Path, size: int) -> None:
        """The first ``size`` bytes of ``path`` are final (they never change again)."""
        with self._cond:
            self._open(path)
            self._mark = size
            self._cond.notify_all()
        self.tick()

    def _open(self, path: Path) -> None:
        """Open the file once, from the caller's thread: the packer renames it when done, and the
        open descriptor keeps reading the same file (called with the condition held)."""
        if self._fd is None and not self._failed.is_set():
            try:
                self._fd = os.open(path, os.O_RDONLY)
            except OSError as exc:
                self._error = f"cannot read the local archive ({exc.strerror or exc})"
                self._failed.set()

    def tick(self) -> None:
        """Print queued notes and, when one is due, a progress line (the log's own thread only)."""
        while self._notes:
            self._log(self._notes.popleft())
        self._meter.tick()

    def finish(self, path: Path, size: int) -> UploadResult:
        """The file is complete at ``path`` with ``size`` bytes: send the rest, complete, verify."""
        with self._cond:
            self._open(path)
            self._mark, self._final = size, size
            self._cond.notify_all()
        self._meter.total = size
        try:
            while self._thread.is_alive():
                self._thread.join(0.2)
                self.tick()
        except BaseException:  # Ctrl-C, Cog's cancel: leave no orphaned parts behind
            self.cancel()
            raise
        self.tick()
        if self._error is not None or self._result is None:
            raise self.error(self._error or "the upload stopped without a result", path)
        self._meter.finish()
        result = self._result
        self._log(f"uploaded and verified {result.url} ({_mib(result.size)}, sha256 {result.sha256})")
        return result

    def cancel(self) -> None:
        """Stop: no more parts, and the multipart upload is aborted (its parts are deleted)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._failed.set()
        self._abort()
        while self._notes:
            self._log(self._notes.popleft())

    # --- the upload's thread ------------------------------------------------------------------

    def error(self, reason: str, path: Path | None) -> UploadError:
        """The error for a failed upload of ``path`` (redacted; it names where the archive is kept)."""
        kept = f"; the local archive is kept at {path}" if path is not None else ""
        return UploadError(redact(f"upload to {self.target} failed: {reason}{kept}", self._secrets))

    def _main(self) -> None:
        try:
            self._upload()
        except Failed as exc:
            self._error = str(exc)
        except OSError as exc:  # reading the local file
            self._error = f"cannot read the local archive ({exc.strerror or exc})"
        except BaseException as exc:  # never lost silently: finish() raises it as an UploadError
            self._error = redact(f"{type(exc).__name__}: {exc}", self._secrets)
        finally:
            with self._cond:
                fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)
        if self._error is not None:
            self._failed.set()
            self._notes.append(redact(f"upload to {self.target} failed: {self._error}", self._secrets))
            self._abort()

    def _abort(self) -> None:
        with self._cond:
            upload_id, self._upload_id = self._upload_id, None
            if upload_id is None:
                return
        abort_multipart(self._client, self.bucket, self.key, upload_id, self._notes.append)

    def _upload(self) -> None:
        client, run = self._client, self._run
        created = run(
            "start the multipart upload",
            lambda: client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ChecksumAlgorithm="SHA256", ContentType="application/gzip"
            ),
        )
        upload_id = str(created["UploadId"])
        with self._cond:
            self._upload_id = upload_id
            canceled = self._stop
        if canceled:  # while the upload was being created: cancel() found nothing to abort yet
            self._abort()
            return
        sent = self._send_parts(upload_id)
        if sent is None:
            return
        parts, digests, size, sha256 = sent
        completed = run(
            "complete the multipart upload",
            lambda: client.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            ),
        )
        with self._cond:
            self._upload_id = None  # complete: nothing to abort any more
        composite = hashlib.sha256(b"".join(digests)).digest()
        _verify(client, run, self.bucket, self.key, size, sha256, composite, len(parts), self._verify_by_download,
                self._notes.append)  # fmt: skip
        checksum_key = self.key + ".sha256"
        line = f"{sha256}  {self._name}\n".encode()
        run(
            "write the sha256 file",
            lambda: client.put_object(
                Bucket=self.bucket,
                Key=checksum_key,
                Body=line,
                ContentType="text/plain",
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=base64.b64encode(hashlib.sha256(line).digest()).decode(),
            ),
        )
        etag = str(completed.get("ETag", "")).strip('"')
        self._result = UploadResult(
            self.target, self.key, size, sha256, etag, checksum_url=f"s3://{self.bucket}/{checksum_key}"
        )

    def _next_part(self, offset: int) -> tuple[int, int] | None:
        """Wait until the part at ``offset`` is final; (file descriptor, its length), or None once
        stopped or done."""
        with self._cond:
            while not (self._stop or self._failed.is_set()):
                if self._fd is not None and self._final is not None:
                    left = self._final - offset
                    return (self._fd, min(self._part, left)) if left > 0 else None
                if self._fd is not None and self._mark - offset >= self._part:
                    return self._fd, self._part
                self._cond.wait(1.0)
        return None

    def _send_parts(self, upload_id: str) -> tuple[list[dict[str, Any]], list[bytes], int, str] | None:
        whole = hashlib.sha256()
        futures: list[Future[tuple[dict[str, Any], bytes]]] = []
        slots = threading.Semaphore(self._workers)
        offset = 0
        with ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="upload-part") as pool:
            while (nxt := self._next_part(offset)) is not None:
                fd, length = nxt
                data = os.pread(fd, length, offset)
                if len(data) != length:
                    raise Failed("the local archive shrank while it was being uploaded")
                whole.update(data)
                number = len(futures) + 1
                if number > _MAX_PARTS:
                    raise Failed(f"the archive needs more than {_MAX_PARTS} parts of {_mib(self._part)}")
                if not self._wait_for_slot(slots):
                    break
                future = pool.submit(self._send_part, upload_id, number, data)
                future.add_done_callback(lambda _: slots.release())
                futures.append(future)
                offset += length
        for future in futures:  # the first failure, in part order
            if (exc := future.exception()) is not None:
                raise exc
        if self._stop or self._failed.is_set() or self._final is None:
            return None
        if offset != self._final:
            raise Failed(f"sent {offset} bytes, but the archive has {self._final}")
        results = [f.result() for f in futures]
        return [r[0] for r in results], [r[1] for r in results], offset, whole.hexdigest()

    def _wait_for_slot(self, slots: threading.Semaphore) -> bool:
        """Wait until fewer than ``workers`` parts are in flight; False once a part failed."""
        while not slots.acquire(timeout=0.5):
            if self._failed.is_set():
                return False
        if self._failed.is_set():  # the part that freed the slot failed
            slots.release()
            return False
        return True

    def _send_part(self, upload_id: str, number: int, data: bytes) -> tuple[dict[str, Any], bytes]:
        try:
            digest = hashlib.sha256(data).digest()
            checksum = base64.b64encode(digest).decode()

            def send() -> Any:
                reply = self._client.upload_part(
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=checksum,
                )
                echoed = reply.get("ChecksumSHA256")
                if echoed is not None and echoed != checksum:
                    raise Transient(f"the server computed SHA-256 {echoed} for part {number}, we sent {checksum}")
                return reply

            reply = self._run(f"upload part {number}", send)
        except BaseException:
            self._failed.set()
            with self._cond:
                self._cond.notify_all()
            raise
        self._meter.add(len(data))
        return {"PartNumber": number, "ETag": reply["ETag"], "ChecksumSHA256": checksum}, digest


def _verify(
    client: Any,
    run: Retrier,
    bucket: str,
    key: str,
    size: int,
    sha256: str,
    composite: bytes,
    parts: int,
    by_download: bool,
    log: Log,
) -> None:
    head = run("check the uploaded object", lambda: client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED"))
    remote_size = head.get("ContentLength")
    if remote_size != size:
        raise Failed(f"the uploaded object has {remote_size} bytes, the local archive {size}")
    reported = head.get("ChecksumSHA256")
    expected = base64.b64encode(composite).decode()
    if reported is not None:
        # S3 reports a multipart object's checksum as "<b64 of sha256(part digests)>-<parts>";
        # moto leaves out the "-<parts>" suffix. Both forms name the same composite.
        value, _, suffix = str(reported).partition("-")
        if value != expected or (suffix and suffix != str(parts)):
            raise Failed(f"the store reports checksum {reported}, the uploaded parts give {expected}-{parts}")
        log("verified: size and composite SHA-256 checksum match")
    if reported is None or by_download:
        # Some S3-compatible stores report no checksum: hash the object as it streams back.
        digest = run("read the object back", lambda: _remote_sha256(client, bucket, key))
        if digest != sha256:
            raise Failed(f"the object read back has sha256 {digest}, the local archive {sha256}")
        log("verified: the object read back has the local archive's sha256")


def _remote_sha256(client: Any, bucket: str, key: str) -> str:
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    digest = hashlib.sha256()
    try:
        for chunk in body.iter_chunks(chunk_size=_CHUNK):
            digest.update(chunk)
    finally:
        body.close()
    return digest.hexdigest()


def _part_size(size: int, requested: int | None) -> int:
    part = max(MIN_PART_SIZE, requested or MIN_PART_SIZE)
    # S3 allows 10,000 parts: grow parts for archives past ~78 GiB.
    return max(part, math.ceil(size / _MAX_PARTS))


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
