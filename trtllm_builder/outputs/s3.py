"""Talking to S3 (or any S3-compatible store): URLs, credentials, the client, retries, errors.

Everything here keeps secrets out of what it says: credentials print as ``***``, error texts are
redacted of every secret and of credentials inside an endpoint URL.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from trtllm_builder.errors import ConfigError
from trtllm_builder.secrets import mask

__all__ = [
    "Failed",
    "Retrier",
    "S3Credentials",
    "Transient",
    "abort_multipart",
    "make_client",
    "parse_s3_url",
    "redact",
]

T = TypeVar("T")
Log = Callable[[str], object]

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
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


class Failed(Exception):
    """A request failed for good (message already redacted)."""


class Retrier:
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
            except (ClientError, BotoCoreError, Transient) as exc:
                reason = redact(_describe_error(exc), self.secrets)
                if not _is_transient(exc) or attempt >= self.retries:
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    raise Failed(f"could not {what}{tries}: {reason}") from None
                delay = min(self.backoff_s * 2**attempt, 30.0)
                attempt += 1
                self.log(f"could not {what} ({reason}); retry {attempt}/{self.retries} in {delay:.1f}s")
                time.sleep(delay)


class Transient(Exception):
    """A retryable problem we detected ourselves (a part checksum the server disagrees with)."""


def abort_multipart(client: Any, bucket: str, key: str, upload_id: str, log: Log) -> None:
    """Best effort: leave no orphaned parts behind (they cost money) once we give up."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except (ClientError, BotoCoreError):
        log(f"could not abort the multipart upload {upload_id}; remove its parts with abort-multipart-upload")


def make_client(credentials: S3Credentials | None, *, max_pool: int = 10) -> Any:
    import boto3
    from botocore.config import Config

    creds = credentials or S3Credentials()
    endpoint = creds.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(
        retries={"mode": "standard", "max_attempts": 1},  # retries are ours, per part
        connect_timeout=10,
        max_pool_connections=max(10, max_pool),
        read_timeout=120,
        # Every request that carries data also carries its SHA-256 checksum header, which is signed
        # and which the store verifies: hashing the body once more for the signature (what botocore
        # does on http:// endpoints) adds a third pass over the archive and buys nothing.
        s3={"payload_signing_enabled": False},
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

    if isinstance(exc, Transient | ConnectionError | HTTPClientError):
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


def redact(text: str, secrets: list[str]) -> str:
    """``text`` without any form of ``secrets`` (:func:`trtllm_builder.secrets.mask`) or credentials
    inside a URL (an endpoint's ``user:password@``, however short)."""
    return _USERINFO_RE.sub("//***@", mask(text, secrets))


def _safe_endpoint(endpoint: str | None) -> str | None:
    return None if endpoint is None else redact(endpoint, [])
