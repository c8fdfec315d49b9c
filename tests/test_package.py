"""The archive: plain tar -xzf works, checksums match, levels fit the data, failures leave nothing."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CliRun

from trtllm_builder.errors import PackagingError
from trtllm_builder.package.archive import write_archive


def members(tmp_path: Path) -> list[tuple[str, Path]]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"version": "0.21.0", "text": "a" * 5000}))
    (src / "rank0.engine").write_bytes(os.urandom(3 << 20))
    (src / "rank1.engine").write_bytes(os.urandom((1 << 20) + 7))  # not a multiple of the tar block
    (src / "tokenizer.json").write_text(json.dumps({"vocab": {f"tok{i}": i for i in range(5000)}}))
    (src / "empty.txt").write_text("")
    return [(p.name, p) for p in sorted(src.iterdir())]


def test_archive_roundtrip_with_plain_tar(tmp_path: Path) -> None:
    files = members(tmp_path)
    dest = tmp_path / "out" / "engine.tar.gz"
    manifest: dict = {"format_version": 1}
    written = write_archive(files, dest, manifest, log=lambda _: None)
    assert [f.path for f in written] == [n for n, _ in files]
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "-xzf", str(dest), "-C", str(out)], check=True)
    subprocess.run(["gzip", "-t", str(dest)], check=True)
    got = json.loads((out / "manifest.json").read_text())
    assert got["format_version"] == 1
    assert {f["path"] for f in got["files"]} == {n for n, _ in files}
    for f in got["files"]:
        data = (out / f["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["size"]
    with tarfile.open(dest) as tf:  # Python's reader agrees, and manifest.json is last
        assert tf.getnames()[-1] == "manifest.json"
    with tarfile.open(dest, mode="r|gz") as tf:  # so does a streaming reader (one gzip member)
        assert [m.name for m in tf] == [*(n for n, _ in files), "manifest.json"]
    assert not list(dest.parent.glob(".*partial*"))


def test_text_is_compressed_engines_are_stored(tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.mkdir()
    (src / "tokenizer.json").write_text("hello " * 200_000)  # 1.2 MB of text
    dest = tmp_path / "a.tar.gz"
    write_archive([("tokenizer.json", src / "tokenizer.json")], dest, {}, log=lambda _: None)
    assert dest.stat().st_size < 100_000
    (src / "rank0.engine").write_bytes(os.urandom(2 << 20))
    write_archive([("rank0.engine", src / "rank0.engine")], dest, {}, log=lambda _: None)
    assert (2 << 20) < dest.stat().st_size < (2 << 20) * 1.01


def test_duplicate_names_rejected(tmp_path: Path) -> None:
    files = members(tmp_path)
    with pytest.raises(PackagingError, match=r"two files would be packed as config\.json"):
        write_archive([files[0], files[0]], tmp_path / "a.tar.gz", {}, log=lambda _: None)


def test_file_size_limit_leaves_no_partial_archive(tmp_path: Path) -> None:
    """A full disk (simulated by RLIMIT_FSIZE in a child process) fails cleanly and leaves nothing behind."""
    files = members(tmp_path)
    dest = tmp_path / "out" / "engine.tar.gz"
    code = textwrap.dedent("""
        import json, resource, signal, sys
        from pathlib import Path
        from trtllm_builder.package.archive import write_archive
        from trtllm_builder.errors import PackagingError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))
        files, dest = json.loads(sys.argv[1]), Path(sys.argv[2])
        try:
            write_archive([(n, Path(p)) for n, p in files], dest, {}, log=print)
        except PackagingError as e:
            print("ERR", e)
            sys.exit(3)
    """)
    arg = json.dumps([(n, str(p)) for n, p in files])
    res = subprocess.run([sys.executable, "-c", code, arg, str(dest)], capture_output=True, text=True)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "could not write the archive" in res.stdout and "nothing was left behind" in res.stdout
    assert list(dest.parent.iterdir()) == []


# --- progress lines (issue #13): through the CLI, and in-process with a short interval -------------


def test_cli_prints_pack_and_upload_progress(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    from test_pipeline_e2e import project_config
    from test_upload import ACCESS_KEY, SECRET_KEY, s3, start_moto, stop

    proc, endpoint = start_moto()
    try:
        s3(endpoint).create_bucket(Bucket="engines")  # type: ignore[attr-defined]
        cfg = project_config(tmp_path, tiny_model("llama"), "llama", tp=2)
        env = {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": endpoint, "STANDIN_ENGINE_BYTES": str(3 << 20),
        }  # fmt: skip
        res = run_cli("build", str(cfg), "-o", str(tmp_path / "e.tar.gz"), "--upload", "s3://engines/cli", env=env)
    finally:
        stop(proc)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert any(re.fullmatch(r"pack: 6\.\d/6\.\d MB \(100%\) in \d+ s, [\d.]+ [kMG]B/s", line) for line in lines)
    assert any(re.fullmatch(r"upload: 6\.\d/6\.\d MB \(100%\) in \d+ s, [\d.]+ [kMG]B/s", line) for line in lines)
    assert "\r" not in res.stderr
    assert res.stdout.splitlines() == [str(tmp_path / "e.tar.gz"), "s3://engines/cli/e.tar.gz"]


def test_in_process_progress_comes_from_the_calling_thread(
    standin_env: dict[str, str], tmp_path: Path, tiny_model: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under Cog only what the prediction's thread prints reaches its logs: every line, progress
    included, must come from the thread that called build()."""
    from test_pipeline_e2e import project_config

    from trtllm_builder.pipeline import BuildOptions, build, prepare

    monkeypatch.setenv("STANDIN_ENGINE_BYTES", str(48 << 20))
    cfg = project_config(tmp_path, tiny_model("llama"), "llama", tp=2)
    config, plan = prepare(cfg, work_dir=tmp_path / "w")
    lines: list[tuple[str, threading.Thread]] = []
    opts = BuildOptions(
        output=tmp_path / "e.tar.gz",
        cache_dir=tmp_path / "cache",
        log=lambda line: lines.append((line, threading.current_thread())),
        progress_interval=0.01,
    )
    build(config, plan, opts)
    assert {thread for _, thread in lines} == {threading.current_thread()}
    pack = [line for line, _ in lines if line.startswith("pack: ")]
    assert len(pack) >= 3, pack  # lines while packing, then the closing one
    assert re.fullmatch(r"pack: [\d.]+/100\.\d MB \(\d+%\), [\d.]+ [kMG]?B/s, ETA .+", pack[0])
    assert pack[-1].startswith("pack: 100.") and "(100%) in" in pack[-1]
    assert BuildOptions(output=tmp_path).progress_interval == 5.0
