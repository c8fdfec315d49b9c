"""upload: multipart upload to a real (moto) S3 server on loopback, verified; failures keep the local file."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from trtllm_builder.errors import ConfigError, UploadError
from trtllm_builder.upload import S3Credentials, parse_s3_url, upload_archive

ACCESS_KEY = "AKIATESTKEY0000SECRET"
SECRET_KEY = "s3cr3t/VERY+private-value"
SESSION_TOKEN = "session-token-that-must-not-leak"
MANIFEST_SHA = "ab" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start within 30 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    proc, endpoint = start_moto()
    try:
        yield endpoint
    finally:
        stop(proc)


def creds(endpoint: str) -> S3Credentials:
    return S3Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, "us-east-1", endpoint)


def s3(endpoint: str) -> object:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )


@pytest.fixture(scope="module")
def bucket(moto_endpoint: str) -> str:
    s3(moto_endpoint).create_bucket(Bucket="engines")  # type: ignore[attr-defined]
    return "engines"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_file(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        for _ in range(size // (1 << 20)):
            f.write(os.urandom(1 << 20))
        f.write(os.urandom(size % (1 << 20)))
    return path


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN):
            assert secret not in text


def test_multipart_upload_is_verified(tmp_path: Path, moto_endpoint: str, bucket: str) -> None:
    archive = make_file(tmp_path / "engine.tar.gz", 20 * 2**20 + 12345)
    local_sha = sha256(archive)
    logs: list[str] = []
    result = upload_archive(
        archive,
        f"s3://{bucket}/models/tiny/",
        credentials=creds(moto_endpoint),
        manifest_sha256=MANIFEST_SHA,
        log=logs.append,
    )
    assert result.url == f"s3://{bucket}/models/tiny/engine.tar.gz"
    assert result.key == "models/tiny/engine.tar.gz"
    assert (result.size, result.sha256) == (archive.stat().st_size, local_sha)
    assert result.etag.endswith("-3")  # three parts of 8 MiB
    assert any("part 3/3 uploaded" in line for line in logs)
    assert any("composite SHA-256 checksum match" in line for line in logs)
    assert_no_secrets(*logs, repr(result))

    client = s3(moto_endpoint)
    head = client.head_object(Bucket=bucket, Key=result.key)  # type: ignore[attr-defined]
    assert head["Metadata"] == {"sha256": local_sha, "manifest-sha256": MANIFEST_SHA}
    body = client.get_object(Bucket=bucket, Key=result.key)["Body"].read()  # type: ignore[attr-defined]
    assert hashlib.sha256(body).hexdigest() == local_sha
    assert sha256(archive) == local_sha  # the local file is untouched


def test_upload_verified_by_reading_back(tmp_path: Path, moto_endpoint: str, bucket: str) -> None:
    archive = make_file(tmp_path / "small.tar.gz", 3000)
    logs: list[str] = []
    result = upload_archive(
        archive,
        f"s3://{bucket}",
        credentials=creds(moto_endpoint),
        manifest_sha256=MANIFEST_SHA,
        log=logs.append,
        verify_by_download=True,
    )
    assert result.key == "small.tar.gz"
    assert any("read back has the local archive's sha256" in line for line in logs)


def test_endpoint_from_the_environment(
    tmp_path: Path, moto_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    archive = make_file(tmp_path / "env.tar.gz", 1000)
    result = upload_archive(
        archive,
        f"s3://{bucket}/env",
        credentials=S3Credentials(ACCESS_KEY, SECRET_KEY, region="us-east-1"),
        manifest_sha256=MANIFEST_SHA,
        log=lambda _: None,
    )
    assert result.key == "env/env.tar.gz"


def test_missing_bucket_fails_without_retries_and_keeps_the_file(tmp_path: Path, moto_endpoint: str) -> None:
    archive = make_file(tmp_path / "engine.tar.gz", 10_000)
    before = sha256(archive)
    logs: list[str] = []
    with pytest.raises(UploadError) as err:
        upload_archive(
            archive,
            "s3://no-such-bucket/x",
            credentials=creds(moto_endpoint),
            manifest_sha256=MANIFEST_SHA,
            log=logs.append,
            backoff_s=0.01,
        )
    message = str(err.value)
    assert "NoSuchBucket" in message and "create the bucket" in message
    assert f"the local archive is kept at {archive}" in message
    assert not any("retry" in line for line in logs)  # not a transient error
    assert archive.exists() and sha256(archive) == before
    assert_no_secrets(message, *logs)


def test_server_dying_mid_upload(tmp_path: Path) -> None:
    proc, endpoint = start_moto()
    try:
        s3(endpoint).create_bucket(Bucket="dying")  # type: ignore[attr-defined]
        archive = make_file(tmp_path / "engine.tar.gz", 20 * 2**20)
        before = sha256(archive)
        logs: list[str] = []

        def log(line: str) -> None:
            logs.append(line)
            if "part 1/3 uploaded" in line:
                stop(proc)  # the server goes away between two parts

        started = time.monotonic()
        with pytest.raises(UploadError) as err:
            upload_archive(
                archive,
                "s3://dying/run1",
                credentials=creds(endpoint),
                manifest_sha256=MANIFEST_SHA,
                retries=2,
                log=log,
                backoff_s=0.01,
            )
        assert time.monotonic() - started < 30
    finally:
        stop(proc)
    message = str(err.value)
    assert "could not upload part 2/3 after 3 attempts" in message
    assert f"the local archive is kept at {archive}" in message
    assert sum("retry" in line for line in logs) == 2
    assert archive.exists() and sha256(archive) == before
    assert_no_secrets(message, *logs)


def test_credentials_repr_hides_secrets() -> None:
    text = repr(creds("http://user:pw@127.0.0.1:9000"))
    assert_no_secrets(text, str(creds("http://127.0.0.1")))
    assert "pw" not in text and "***" in text and "us-east-1" in text


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://my.bucket-1/a/b", ("my.bucket-1", "a/b/")),
        ("s3://bucket/a/b/", ("bucket", "a/b/")),
    ],
)
def test_parse_s3_url(url: str, expected: tuple[str, str]) -> None:
    assert parse_s3_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://bucket/x",
        "s3://",
        "s3://B!/x",
        "s3://ab",
        "s3://bucket/a//b",
        "s3://bucket/../x",
        "s3://bucket/x?versionId=1",
        "bucket/x",
    ],
)
def test_parse_s3_url_rejects(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_s3_url(url)


def test_parse_s3_url_never_echoes_credentials() -> None:
    with pytest.raises(ConfigError) as err:
        parse_s3_url(f"s3://{ACCESS_KEY}:{SECRET_KEY}@bucket/x")
    assert_no_secrets(str(err.value))
    with pytest.raises(ConfigError) as err:
        parse_s3_url(f"https://{ACCESS_KEY}:{SECRET_KEY}@host/x")
    assert_no_secrets(str(err.value))


def test_unreachable_endpoint_with_userinfo_is_not_leaked(tmp_path: Path) -> None:
    archive = make_file(tmp_path / "engine.tar.gz", 1000)
    logs: list[str] = []
    endpoint = f"http://user:pw-in-endpoint@127.0.0.1:{free_port()}"
    with pytest.raises(UploadError) as err:
        upload_archive(
            archive,
            "s3://engines/x",
            credentials=creds(endpoint),
            manifest_sha256=MANIFEST_SHA,
            retries=1,
            log=logs.append,
            backoff_s=0.01,
        )
    assert "could not start the multipart upload after 2 attempts" in str(err.value)
    for text in (str(err.value), *logs):
        assert "pw-in-endpoint" not in text
    assert_no_secrets(str(err.value), *logs)
    assert archive.exists()
