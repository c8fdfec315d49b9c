"""Upload an archive to S3 (or any S3-compatible store) and prove it arrived intact.

The local archive is only ever read: whatever happens, it stays where it is (DJL's
partition tool deletes its local copy after an upload whose exit code it ignores).

How an upload is verified:

* the archive's sha256 is computed first and stored as object metadata ``sha256``
  (and the manifest's as ``manifest-sha256``), so anyone can check a download;
* it is sent as a multipart upload, each part with its own SHA-256 checksum; the
  checksum the server reports back for a part must equal ours;
* afterwards a HEAD must report the same size, our metadata and the composite
  SHA-256 (sha256 of the parts' digests) that we computed; a store that reports no
  checksum gets the object streamed back and hashed instead.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError, UploadError
from .package import sha256_file

__all__ = [
    "MIN_PART_SIZE",
    "S3Credentials",
    "UploadResult",
    "parse_s3_url",
    "upload_archive",
]

MIN_PART_SIZE = 8 * 1024 * 1024
_MAX_PARTS = 10_000  # S3's limit
_CHUNK = 1024 * 1024
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_USERINFO_RE = re.compile(r"//[^/@\s]*@")
# Error codes worth another try; anything else (AccessDenied, NoSuchBucket, ...) is final.
_TRANSIENT_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "InternalError",
        "ServiceUnavailable",
        "BadDigest",
        "XAmzContentSHA256Mismatch",
        "InvalidDigest",
    }
)

T = TypeVar("T")
Log = Callable[[str], object]


@dataclass(frozen=True)
class S3Credentials:
    """Explicit S3 credentials. ``None`` fields fall back to boto3's usual sources."""

    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    region: str | None = None
    endpoint_url: str | None = None

    def __repr__(self) -> str:
        def hidden(value: str | None) -> str:
            return "None" if value is None else "'***'"

        return (
            f"S3Credentials(access_key_id={hidden(self.access_key_id)}, "
            f"secret_access_key={hidden(self.secret_access_key)}, session_token={hidden(self.session_token)}, "
            f"region={self.region!r}, endpoint_url={_safe_endpoint(self.endpoint_url)!r})"
        )

    __str__ = __repr__

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line or an error message."""
        return [s for s in (self.access_key_id, self.secret_access_key, self.session_token) if s]


@dataclass(frozen=True)
class UploadResult:
    """Where the archive went, and what was verified there."""

    url: str
    key: str
    size: int
    sha256: str
    etag: str


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket[/prefix]`` into ``(bucket, prefix)``.

    The prefix is a folder: it comes back empty or ending in ``/``, so the object key
    is ``prefix + archive file name``.
    """
    if isinstance(url, str) and "@" in url:
        # Never echo it back: the text around "@" may be credentials (s3://key:secret@bucket).
        raise ConfigError(
            "upload URL must not contain `@` (credentials in a URL are refused and never logged); "
            "use s3://bucket/prefix and pass credentials separately"
        )
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise ConfigError(f"upload URL must look like s3://bucket/prefix; got {url!r}")
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if "?" in url or "#" in url:
        raise ConfigError(f"upload URL {url!r} must not have a query or fragment; use s3://bucket/prefix")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise ConfigError(
            f"upload URL {url!r}: `{bucket}` is not a valid S3 bucket name "
            "(3-63 lowercase letters, digits, dots or hyphens)"
        )
    if prefix:
        segments = prefix.rstrip("/").split("/")
        if any(s in ("", ".", "..") for s in segments) or any(ord(c) < 32 for c in prefix):
            raise ConfigError(f"upload URL {url!r}: the prefix has an empty, `.` or `..` segment or control characters")
        prefix = prefix.rstrip("/") + "/"
    return bucket, prefix


def upload_archive(
    path: Path,
    url: str,
    *,
    credentials: S3Credentials | None,
    manifest_sha256: str,
    retries: int = 3,
    log: Log = print,
    part_size: int | None = None,
    backoff_s: float = 1.0,
    verify_by_download: bool = False,
) -> UploadResult:
    """Upload ``path`` to ``s3://bucket/prefix/<file name>`` and verify it there.

    ``credentials`` ``None`` uses boto3's default chain; the endpoint comes from
    ``credentials.endpoint_url``, else ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``.
    Each request is retried ``retries`` times on transient errors, with exponential
    backoff from ``backoff_s``. ``verify_by_download`` also streams the object back
    and hashes it. Raises :class:`UploadError` (the local file is kept, untouched).
    """
    path = Path(path)
    bucket, prefix = parse_s3_url(url)
    key = prefix + path.name
    target = f"s3://{bucket}/{key}"
    if not _SHA256_RE.match(manifest_sha256):
        raise UploadError(f"manifest_sha256 must be 64 lowercase hex digits; got {manifest_sha256!r}")
    secrets = credentials.secrets() if credentials else []

    def fail(reason: str) -> UploadError:
        return UploadError(
            _redact(f"upload to {target} failed: {reason}; the local archive is kept at {path}", secrets)
        )

    try:
        size = path.stat().st_size
        sha256 = sha256_file(path)
    except OSError as exc:
        raise fail(f"cannot read the local archive ({exc.strerror or exc})") from None
    if size == 0:
        raise fail("the local archive is empty")
    parts = _part_size(size, part_size)
    count = max(1, math.ceil(size / parts))
    log(f"uploading {path} ({_mib(size)}, sha256 {sha256[:12]}...) to {target} in {count} part(s) of {_mib(parts)}")

    try:
        client = _client(credentials)
    except ValueError as exc:  # botocore raises ValueError for a malformed endpoint URL or region
        raise fail(f"cannot set up the S3 client: {exc}") from None
    run = _Retrier(retries=retries, backoff_s=backoff_s, log=log, secrets=secrets)
    metadata = {"sha256": sha256, "manifest-sha256": manifest_sha256}
    upload_id: str | None = None
    try:
        created = run(
            "start the multipart upload",
            lambda: client.create_multipart_upload(
                Bucket=bucket,
                Key=key,
                ChecksumAlgorithm="SHA256",
                ContentType="application/gzip",
                Metadata=metadata,
            ),
        )
        upload_id = str(created["UploadId"])
        done, composite = _send_parts(client, run, bucket, key, upload_id, path, size, parts, sha256, log)
        completed = run(
            "complete the multipart upload",
            lambda: client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
            ),
        )
        upload_id = None
        etag = str(completed.get("ETag", "")).strip('"')
        _verify(client, run, bucket, key, size, sha256, composite, len(done), verify_by_download, log)
    except _Failed as exc:
        if upload_id is not None:
            _abort(client, bucket, key, upload_id, log)
        raise fail(str(exc)) from None
    except OSError as exc:  # reading the local file mid-way
        if upload_id is not None:
            _abort(client, bucket, key, upload_id, log)
        raise fail(f"cannot read the local archive ({exc.strerror or exc})") from None
    except BaseException:  # Ctrl-C: still leave no orphaned parts behind
        if upload_id is not None:
            _abort(client, bucket, key, upload_id, log)
        raise
    log(f"uploaded and verified {target} ({_mib(size)}, sha256 {sha256})")
    return UploadResult(url=target, key=key, size=size, sha256=sha256, etag=etag)


class _Failed(Exception):
    """A request failed for good (message already redacted)."""


class _Retrier:
    def __init__(self, *, retries: int, backoff_s: float, log: Log, secrets: list[str]) -> None:
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self.log = log
        self.secrets = secrets

    def __call__(self, what: str, call: Callable[[], T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError

        attempt = 0
        while True:
            try:
                return call()
            except (ClientError, BotoCoreError, _Transient) as exc:
                reason = _redact(_describe_error(exc), self.secrets)
                if not _is_transient(exc) or attempt >= self.retries:
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    raise _Failed(f"could not {what}{tries}: {reason}") from None
                delay = min(self.backoff_s * 2**attempt, 30.0)
                attempt += 1
                self.log(f"could not {what} ({reason}); retry {attempt}/{self.retries} in {delay:.1f}s")
                time.sleep(delay)


class _Transient(Exception):
    """A retryable problem we detected ourselves (a part checksum the server disagrees with)."""


def _send_parts(
    client: Any,
    run: _Retrier,
    bucket: str,
    key: str,
    upload_id: str,
    path: Path,
    size: int,
    part_size: int,
    sha256: str,
    log: Log,
) -> tuple[list[dict[str, Any]], bytes]:
    done: list[dict[str, Any]] = []
    digests: list[bytes] = []
    whole = hashlib.sha256()
    count = max(1, math.ceil(size / part_size))
    with path.open("rb") as f:
        for number in range(1, count + 1):
            # One part in memory at a time: memory is bounded by the part size.
            data = f.read(part_size)
            whole.update(data)
            digest = hashlib.sha256(data).digest()
            checksum = base64.b64encode(digest).decode()

            def send(data: bytes = data, number: int = number, checksum: str = checksum) -> Any:
                reply = client.upload_part(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=checksum,
                )
                echoed = reply.get("ChecksumSHA256")
                if echoed is not None and echoed != checksum:
                    raise _Transient(f"the server computed SHA-256 {echoed} for part {number}, we sent {checksum}")
                return reply

            reply = run(f"upload part {number}/{count}", send)
            done.append({"PartNumber": number, "ETag": reply["ETag"], "ChecksumSHA256": checksum})
            digests.append(digest)
            log(f"part {number}/{count} uploaded ({_mib(len(data))})")
    if whole.hexdigest() != sha256:
        raise _Failed("the local archive changed while it was being uploaded; is another process writing it?")
    return done, hashlib.sha256(b"".join(digests)).digest()


def _verify(
    client: Any,
    run: _Retrier,
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
        raise _Failed(f"the uploaded object has {remote_size} bytes, the local archive {size}")
    remote_meta = (head.get("Metadata") or {}).get("sha256")
    if remote_meta != sha256:
        raise _Failed(f"the uploaded object's sha256 metadata is {remote_meta!r}, expected {sha256}")
    reported = head.get("ChecksumSHA256")
    expected = base64.b64encode(composite).decode()
    if reported is not None:
        # S3 reports a multipart object's checksum as "<b64 of sha256(part digests)>-<parts>";
        # moto leaves out the "-<parts>" suffix. Both forms name the same composite.
        value, _, suffix = str(reported).partition("-")
        if value != expected or (suffix and suffix != str(parts)):
            raise _Failed(f"the store reports checksum {reported}, the uploaded parts give {expected}-{parts}")
        log("verified: size, sha256 metadata and composite SHA-256 checksum match")
    if reported is None or by_download:
        # Some S3-compatible stores report no checksum: hash the object as it streams back.
        digest = run("read the object back", lambda: _remote_sha256(client, bucket, key))
        if digest != sha256:
            raise _Failed(f"the object read back has sha256 {digest}, the local archive {sha256}")
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


def _abort(client: Any, bucket: str, key: str, upload_id: str, log: Log) -> None:
    """Best effort: leave no orphaned parts behind (they cost money) once we give up."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except (ClientError, BotoCoreError):
        log(f"could not abort the multipart upload {upload_id}; remove its parts with abort-multipart-upload")


def _client(credentials: S3Credentials | None) -> Any:
    import boto3
    from botocore.config import Config

    creds = credentials or S3Credentials()
    endpoint = creds.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(
        retries={"mode": "standard", "max_attempts": 1},  # retries are ours, per part
        connect_timeout=10,
        read_timeout=120,
    )
    return boto3.client(
        "s3",
        aws_access_key_id=creds.access_key_id,
        aws_secret_access_key=creds.secret_access_key,
        aws_session_token=creds.session_token,
        region_name=creds.region,
        endpoint_url=endpoint or None,
        config=config,
    )


def _is_transient(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, _Transient | ConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error.get("Code") in _TRANSIENT_CODES or status >= 500 or status == 429
    return False


def _describe_error(exc: BaseException) -> str:
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return "no S3 credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or pass credentials"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "?"), error.get("Message", "")
        hint = {
            "NoSuchBucket": "; create the bucket or fix the upload URL",
            "AccessDenied": "; the credentials may not write to this bucket",
            "InvalidAccessKeyId": "; check the access key",
            "SignatureDoesNotMatch": "; check the secret key",
        }.get(str(code), "")
        return f"{code}: {message}{hint}"
    return f"{type(exc).__name__}: {exc}"


def _redact(text: str, secrets: list[str]) -> str:
    # Longest first, so a secret containing another is hidden whole. Values under 4
    # characters are not credentials and would shred every word they occur in.
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return _USERINFO_RE.sub("//***@", text)  # credentials inside an endpoint URL


def _safe_endpoint(endpoint: str | None) -> str | None:
    if endpoint is None:
        return None
    return _USERINFO_RE.sub("//***@", endpoint)


def _part_size(size: int, requested: int | None) -> int:
    part = max(MIN_PART_SIZE, requested or MIN_PART_SIZE)
    # S3 allows 10,000 parts: grow parts for archives past ~78 GiB.
    return max(part, math.ceil(size / _MAX_PARTS))


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
