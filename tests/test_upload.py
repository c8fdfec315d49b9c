"""upload: multipart upload to a real (moto) S3 server on loopback, verified; failures keep the local file."""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from trtllm_builder.errors import ConfigError, PackagingError, UploadError
from trtllm_builder.outputs.inspect import inspect_archive
from trtllm_builder.outputs.upload import ArchiveUpload, S3Credentials, pack_and_upload, parse_s3_url, upload_archive
from trtllm_builder.package.archive import archive_size_bound, write_archive

ACCESS_KEY = "AKIATESTKEY0000SECRET"
SECRET_KEY = "s3cr3t/VERY+private-value"
SESSION_TOKEN = "session-token-that-must-not-leak"


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
        log=logs.append,
    )
    assert result.url == f"s3://{bucket}/models/tiny/engine.tar.gz"
    assert result.key == "models/tiny/engine.tar.gz"
    assert (result.size, result.sha256) == (archive.stat().st_size, local_sha)
    assert result.etag.endswith("-3")  # three parts of 8 MiB
    assert "upload: 21.0/21.0 MB (100%) in" in "\n".join(logs)  # the closing progress line
    assert not any("part" in line and "uploaded" in line for line in logs)  # no line per part
    assert any("composite SHA-256 checksum match" in line for line in logs)
    assert_no_secrets(*logs, repr(result))

    client = s3(moto_endpoint)
    body = client.get_object(Bucket=bucket, Key=result.key)["Body"].read()  # type: ignore[attr-defined]
    assert hashlib.sha256(body).hexdigest() == local_sha
    assert result.checksum_url == f"s3://{bucket}/models/tiny/engine.tar.gz.sha256"
    line = client.get_object(Bucket=bucket, Key=result.key + ".sha256")["Body"].read()  # type: ignore[attr-defined]
    assert line == f"{local_sha}  engine.tar.gz\n".encode()  # `sha256sum -c` reads it
    assert sha256(archive) == local_sha  # the local file is untouched


def test_upload_verified_by_reading_back(tmp_path: Path, moto_endpoint: str, bucket: str) -> None:
    archive = make_file(tmp_path / "small.tar.gz", 3000)
    logs: list[str] = []
    result = upload_archive(
        archive,
        f"s3://{bucket}",
        credentials=creds(moto_endpoint),
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
        upload = ArchiveUpload(
            "s3://dying/run1", archive.name, credentials=creds(endpoint), size_hint=archive.stat().st_size,
            retries=2, log=logs.append, backoff_s=0.01, workers=1,
        )  # fmt: skip
        upload.start()
        upload.written(archive, 8 << 20)  # the first part is final: it goes out
        deadline = time.monotonic() + 20
        while upload.uploaded < 8 << 20:
            assert time.monotonic() < deadline, "the first part was never confirmed"
            time.sleep(0.05)
        stop(proc)  # the server goes away between two parts
        started = time.monotonic()
        with pytest.raises(UploadError) as err:
            upload.finish(archive, archive.stat().st_size)
        assert time.monotonic() - started < 30
    finally:
        stop(proc)
    message = str(err.value)
    assert "could not upload part 2 after 3 attempts" in message
    assert f"the local archive is kept at {archive}" in message
    assert sum("retry" in line for line in logs) == 2, logs
    assert any("could not abort the multipart upload" in line for line in logs)  # said, since it cost money
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
            retries=1,
            log=logs.append,
            backoff_s=0.01,
        )
    assert "could not start the multipart upload after 2 attempts" in str(err.value)
    for text in (str(err.value), *logs):
        assert "pw-in-endpoint" not in text
    assert_no_secrets(str(err.value), *logs)
    assert archive.exists()


# --- upload overlapped with packing (issue #15) and progress lines (issue #13) ----------------------


def engine_files(tmp_path: Path, sizes: list[int]) -> list[tuple[str, Path]]:
    src = tmp_path / "engine"
    src.mkdir()
    (src / "config.json").write_text('{"version": "0.21.0"}')
    out = [("config.json", src / "config.json")]
    for rank, size in enumerate(sizes):
        out.append((f"rank{rank}.engine", make_file(src / f"rank{rank}.engine", size)))
    return out


def test_parts_go_out_while_the_archive_is_being_written(tmp_path: Path, moto_endpoint: str, bucket: str) -> None:
    members = engine_files(tmp_path, [12 << 20] * 3)
    dest = tmp_path / "out" / "engine.tar.gz"
    logs: list[str] = []
    upload = ArchiveUpload(
        f"s3://{bucket}/overlap", dest.name, credentials=creds(moto_endpoint),
        size_hint=archive_size_bound(members), log=logs.append,
    )  # fmt: skip
    upload.start()
    seen_while_packing: list[int] = []

    def follow(path: Path, size: int) -> None:
        upload.written(path, size)
        if size >= 24 << 20 and not seen_while_packing:
            # packing waits here, two thirds done: the first parts must arrive meanwhile
            deadline = time.monotonic() + 20
            while upload.uploaded < 16 << 20:
                assert time.monotonic() < deadline, "no part was uploaded while the archive was being written"
                time.sleep(0.02)
            seen_while_packing.append(upload.uploaded)
            assert not dest.exists()  # the archive is not complete yet

    write_archive(members, dest, {"format_version": 1}, log=logs.append, follow=follow)
    result = upload.finish(dest, dest.stat().st_size)
    assert seen_while_packing and seen_while_packing[0] >= 16 << 20
    assert (result.size, result.sha256) == (dest.stat().st_size, sha256(dest))
    body = s3(moto_endpoint).get_object(Bucket=bucket, Key=result.key)["Body"].read()  # type: ignore[attr-defined]
    assert hashlib.sha256(body).hexdigest() == result.sha256
    assert inspect_archive(dest, gpus=[], trtllm_version="0.21.0").intact  # the local archive is whole


def test_pack_and_upload_prints_progress_for_both(tmp_path: Path, moto_endpoint: str, bucket: str) -> None:
    members = engine_files(tmp_path, [8 << 20] * 4)
    dest = tmp_path / "engine.tar.gz"
    logs: list[str] = []
    files, result = pack_and_upload(
        members, dest, {"format_version": 1}, f"s3://{bucket}/progress", credentials=creds(moto_endpoint),
        log=logs.append, interval=0.01,
    )  # fmt: skip
    assert [f.path for f in files] == [n for n, _ in members]
    assert result.sha256 == sha256(dest)
    total = sum(p.stat().st_size for _, p in members)
    shown = f"{total / 1e6:.1f}"
    every = r"[\d.]+ (B|kB|MB|GB)/s, ETA (\d+ s|\dm\d\ds|unknown \(stalled\))"
    for phase in ("pack", "upload"):
        lines = [line for line in logs if line.startswith(f"{phase}: ")]
        assert any(re.fullmatch(rf"{phase}: [\d.]+/[\d.]+ MB \(\d+%\), {every}", line) for line in lines), lines
        assert re.fullmatch(rf"{phase}: [\d.]+/[\d.]+ MB \(100%\) in \d+ s, [\d.]+ (kB|MB|GB)/s", lines[-1])
    assert any(line.startswith(f"pack: {shown}/{shown} MB (100%)") for line in logs)
    assert not any("\r" in line for line in logs)
    # the default stays one line per 5 s
    assert inspect.signature(write_archive).parameters["interval"].default == 5.0
    assert inspect.signature(ArchiveUpload).parameters["interval"].default == 5.0


def test_failed_upload_leaves_the_archive_complete(tmp_path: Path, moto_endpoint: str) -> None:
    members = engine_files(tmp_path, [9 << 20, 9 << 20])
    dest = tmp_path / "engine.tar.gz"
    logs: list[str] = []
    with pytest.raises(UploadError) as err:
        pack_and_upload(
            members, dest, {"format_version": 1}, "s3://no-such-bucket/x", credentials=creds(moto_endpoint),
            log=logs.append, backoff_s=0.01,
        )  # fmt: skip
    assert "NoSuchBucket" in str(err.value) and f"the local archive is kept at {dest}" in str(err.value)
    assert any(line.startswith("upload to s3://no-such-bucket/x/engine.tar.gz failed: ") for line in logs)
    assert inspect_archive(dest, gpus=[], trtllm_version="0.21.0").intact
    assert_no_secrets(str(err.value), *logs)


def test_failed_packing_aborts_the_upload(tmp_path: Path, moto_endpoint: str, bucket: str) -> None:
    members = engine_files(tmp_path, [12 << 20] * 3)
    dest = tmp_path / "out" / "engine.tar.gz"
    with pytest.raises(PackagingError, match="no longer matches a record made by this test"):
        pack_and_upload(
            members, dest, {"format_version": 1}, f"s3://{bucket}/aborted", credentials=creds(moto_endpoint),
            log=lambda _: None, expect={"rank2.engine": ("0" * 64, "a record made by this test")},
        )  # fmt: skip
    assert list(dest.parent.iterdir()) == []  # no partial archive
    client = s3(moto_endpoint)
    pending = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])  # type: ignore[attr-defined]
    assert [u for u in pending if u["Key"].startswith("aborted/")] == []  # its parts were deleted
    listed = client.list_objects_v2(Bucket=bucket, Prefix="aborted/").get("Contents", [])  # type: ignore[attr-defined]
    assert listed == []
