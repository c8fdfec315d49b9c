"""inspect: stream-verify an archive against its manifest; GPU and version compatibility; GPU detection."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from trtllm_builder.errors import VerifyError
from trtllm_builder.outputs.inspect import format_report, inspect_archive
from trtllm_builder.plan.gpu import GpuInfo, detect_gpus, parse_nvidia_smi_csv
from trtllm_builder.plan.versions import trtllm_version

H100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", "9.0", 81559)
A100 = GpuInfo(0, "NVIDIA A100-SXM4-80GB", "8.0", 81920)
FILES = {
    "config.json": b'{"version": "0.21.0"}',
    "rank0.engine": b"engine-0" * 1000,
    "rank1.engine": b"engine-1" * 1000,
    "tokenizer.json": b'{"model": {}}',
}


def manifest_for(files: dict[str, bytes], **overrides: Any) -> dict[str, Any]:
    """The manifest format of docs/CONTRACTS.md (written here: the real packer is not a dependency)."""
    manifest: dict[str, Any] = {
        "format_version": 1,
        "tool": {"name": "trtllm-builder", "version": "0.1.0"},
        "created_at": "2026-11-23T05:00:00Z",
        "config": {"model": {"id": "org/tiny"}},
        "model": {"id": "org/tiny", "source": "hf", "revision": "abc123"},
        "trtllm": {"version": "0.21.0"},
        "gpus": [{"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}],
        "engine": {"world_size": 2, "tp_size": 2, "pp_size": 1, "dtype": "float16", "layout": "engine"},
        "steps": [{"name": "build", "argv": ["trtllm-build"], "exit_code": 0, "duration_s": 1.0, "cached": False}],
        "output": {"format": "engine"},
        "files": [
            {"path": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in sorted(files.items())
        ],
    }
    manifest.update(overrides)
    return manifest


def write_archive(path: Path, files: dict[str, bytes], manifest: dict[str, Any] | None) -> Path:
    """Files first, ``manifest.json`` last, like the packer."""
    with tarfile.open(path, "w:gz") as tar:
        members = list(files.items())
        if manifest is not None:
            members.append(("manifest.json", json.dumps(manifest, indent=2).encode()))
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return path


def inspect_ok_machine(archive: Path) -> Any:
    return inspect_archive(archive, gpus=[H100, GpuInfo(1, H100.name, "9.0", 81559)], trtllm_version="0.21.0")


def test_intact_archive_on_a_matching_machine(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "engine.tar.gz", FILES, manifest_for(FILES))
    report = inspect_ok_machine(archive)
    assert report.intact and report.ok and report.servable is True
    assert report.files_verified == 4
    assert report.bytes_verified == sum(len(d) for d in FILES.values())
    text = format_report(report)
    assert "integrity: ok, 4 file(s)" in text
    assert "model: org/tiny (hf, abc123)" in text
    assert "2 matching GPU(s), 2 needed: ok" in text
    assert "TensorRT-LLM: built with 0.21.0; this machine has 0.21.0: ok" in text
    assert text.endswith("verdict: OK: intact, and this machine can serve it")


def test_tampered_file_is_named(tmp_path: Path) -> None:
    tampered = dict(FILES, **{"rank1.engine": b"engine-X" * 1000})  # same size, other bytes
    archive = write_archive(tmp_path / "engine.tar.gz", tampered, manifest_for(FILES))
    report = inspect_ok_machine(archive)
    assert not report.ok and not report.intact
    assert [m.path for m in report.mismatched] == ["rank1.engine"]
    assert report.files_verified == 3
    text = format_report(report)
    assert "rank1.engine: sha256 differs" in text
    assert "verdict: NOT OK: the archive does not match its manifest" in text


def test_missing_and_unlisted_files(tmp_path: Path) -> None:
    present = {k: v for k, v in FILES.items() if k != "rank0.engine"}
    present["notes.txt"] = b"not in the manifest"
    archive = write_archive(tmp_path / "engine.tar.gz", present, manifest_for(FILES))
    report = inspect_ok_machine(archive)
    assert report.missing == ["rank0.engine"]
    assert report.unlisted == ["notes.txt"]
    assert not report.ok
    text = format_report(report)
    assert "rank0.engine: listed in manifest.json but not in the archive" in text
    assert "notes.txt: in the archive but not listed in manifest.json" in text


def test_gpu_mismatch_says_what_will_fail(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "engine.tar.gz", FILES, manifest_for(FILES))
    report = inspect_archive(archive, gpus=[A100, GpuInfo(1, A100.name, "8.0", 81920)], trtllm_version="0.21.0")
    assert report.intact and report.servable is False and not report.ok
    text = format_report(report)
    assert (
        "built for compute capability 9.0 (NVIDIA H100 80GB HBM3); this machine has 8.0 (NVIDIA A100-SXM4-80GB): "
        "the engine will fail with 'expecting compute 9.0'; rebuild on a matching GPU"
    ) in text
    assert "verdict: NOT OK: intact, but this machine cannot serve it" in text


def test_too_few_matching_gpus_for_the_world_size(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "engine.tar.gz", FILES, manifest_for(FILES))
    report = inspect_archive(archive, gpus=[H100], trtllm_version="0.21.0")
    assert report.servable is False
    assert "needs 2 GPUs of compute capability 9.0 (world size 2); this machine has 1" in format_report(report)


def test_trtllm_version_mismatch(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "engine.tar.gz", FILES, manifest_for(FILES))
    report = inspect_archive(archive, gpus=[H100, H100], trtllm_version="0.20.0")
    assert report.servable is False and not report.ok
    assert (
        "TensorRT-LLM: built with 0.21.0; this machine has 0.20.0: the engine will fail to load "
        "(serialization version mismatch); install tensorrt_llm==0.21.0 or rebuild with 0.20.0"
    ) in format_report(report)


def test_no_gpu_here_is_unknown_not_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi: detection finds nothing
    archive = write_archive(tmp_path / "engine.tar.gz", FILES, manifest_for(FILES, trtllm={"version": None}))
    report = inspect_archive(archive)
    assert report.gpus == []
    assert report.intact and report.servable is None and report.ok
    text = format_report(report)
    assert "no NVIDIA GPU visible on this machine" in text
    assert "verdict: OK: intact; whether this machine can serve it is unknown" in text


def test_archive_without_manifest(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "engine.tar.gz", FILES, None)
    report = inspect_ok_machine(archive)
    assert not report.ok
    assert "no manifest.json in the archive" in format_report(report)


def test_unknown_manifest_format_version(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "engine.tar.gz", FILES, manifest_for(FILES, format_version=99))
    report = inspect_ok_machine(archive)
    assert not report.ok
    assert "format_version 99" in format_report(report)


def test_unreadable_archives_raise(tmp_path: Path) -> None:
    with pytest.raises(VerifyError, match="does not exist"):
        inspect_archive(tmp_path / "absent.tar.gz", gpus=[])
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"this is not an archive" * 100)
    with pytest.raises(VerifyError, match="truncated or not an archive"):
        inspect_archive(garbage, gpus=[])
    good = write_archive(tmp_path / "good.tar.gz", FILES, manifest_for(FILES)).read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(VerifyError, match="truncated"):
        inspect_archive(cut, gpus=[])


def test_unsafe_member_paths_are_reported(tmp_path: Path) -> None:
    files = dict(FILES, **{"../escape.txt": b"x"})
    archive = write_archive(tmp_path / "engine.tar.gz", files, manifest_for(FILES))
    report = inspect_ok_machine(archive)
    assert not report.ok
    assert "unsafe member path '../escape.txt'" in format_report(report)


def test_memory_stays_flat_on_a_large_member(tmp_path: Path) -> None:
    big = tmp_path / "rank0.engine"
    chunk = os.urandom(1 << 20)
    digest = hashlib.sha256()
    with big.open("wb") as f:
        for _ in range(48):
            f.write(chunk)
            digest.update(chunk)
    size = big.stat().st_size
    manifest = manifest_for({})
    manifest["files"] = [{"path": "rank0.engine", "sha256": digest.hexdigest(), "size": size}]
    archive = tmp_path / "big.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(big, arcname="rank0.engine")
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tracemalloc.start()
    try:
        report = inspect_archive(archive, gpus=[H100, H100], trtllm_version="0.21.0")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok and report.bytes_verified == size
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB member"


# --------------------------------------------------------------------------- gpu.py / versions.py


def fake_nvidia_smi(bin_dir: Path, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!{sys.executable}\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def test_detect_gpus_parses_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvidia_smi(
        tmp_path / "bin",
        "import sys\n"
        "assert '--query-gpu=index,name,compute_cap,memory.total' in sys.argv\n"
        "print('0, NVIDIA H100 80GB HBM3, 9.0, 81559')\n"
        "print('1, NVIDIA A10G, 8.6, [N/A]')",
    )
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert detect_gpus() == [H100, GpuInfo(1, "NVIDIA A10G", "8.6", None)]


def test_detect_gpus_without_or_with_a_failing_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert detect_gpus() == []
    fake_nvidia_smi(tmp_path / "bin", "import sys\nprint('NVIDIA-SMI has failed', file=sys.stderr)\nsys.exit(9)")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert detect_gpus() == []
    fake_nvidia_smi(tmp_path / "bin", "import time\ntime.sleep(30)")
    assert detect_gpus(timeout=0.5) == []


def test_parse_nvidia_smi_skips_garbage() -> None:
    assert parse_nvidia_smi_csv("garbage\n\n0, GPU, compute_cap, 1\n2, Odd, Name, 9.0, 100\n") == [
        GpuInfo(2, "Odd, Name", "9.0", 100)
    ]


def test_trtllm_version_from_a_source_tree(tmp_path: Path) -> None:
    (tmp_path / "tensorrt_llm").mkdir()
    (tmp_path / "tensorrt_llm" / "version.py").write_text(
        'import sys\nraise SystemExit("must not be executed")\n__version__ = "0.21.0"\n'
    )
    assert trtllm_version(tmp_path) == "0.21.0"
    assert trtllm_version(tmp_path / "missing") is None
    assert trtllm_version(None) is None  # tensorrt_llm cannot be installed on these machines


# --------------------------------------------------------------------------- what tar -xzf extracts
#
# Archives crafted like the red-team's (issue #14, item 3) and variants; each is unpacked by the real
# GNU tar, and inspect must report exactly what tar left on disk, and say the archive is not intact.


def tar_bytes(members: list[tuple[str, bytes]], *, end: bool = True, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """An uncompressed tar stream; ``end=False`` leaves out the end-of-archive blocks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    stream = buf.getvalue()
    while not end and stream.endswith(bytes(512)):  # the test data never ends in a zero block itself
        stream = stream[:-512]
    return stream


def genuine(tmp_path: Path) -> tuple[Path, bytes]:
    """An archive written by the real packer, and its tar stream without the end-of-archive blocks."""
    from trtllm_builder.package.archive import write_archive as pack

    src = tmp_path / "src"
    src.mkdir()
    for name, data in FILES.items():
        (src / name).write_bytes(data)
    archive = tmp_path / "genuine.tar.gz"
    manifest = manifest_for({})
    pack([(n, src / n) for n in sorted(FILES)], archive, manifest, log=lambda _: None)
    stream = gzip.decompress(archive.read_bytes())
    while stream.endswith(bytes(512)):
        stream = stream[:-512]
    return archive, stream


def extracted_by_tar(archive: Path, dest: Path) -> tuple[int, dict[str, tuple[str, int]]]:
    """Unpack with the real ``tar -xzf``; (exit code, every regular file left: name -> (sha256, size))."""
    dest.mkdir()
    res = subprocess.run(["tar", "-xzf", str(archive), "-C", str(dest)], capture_output=True, text=True)
    out: dict[str, tuple[str, int]] = {}
    for path in sorted(dest.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            out[path.relative_to(dest).as_posix()] = (hashlib.sha256(data).hexdigest(), len(data))
    return res.returncode, out


def check_against_tar(archive: Path, tmp_path: Path) -> tuple[Any, int]:
    report = inspect_ok_machine(archive)
    code, on_disk = extracted_by_tar(archive, tmp_path / f"x-{archive.name}")
    assert report.contents == on_disk
    return report, code


def test_packer_output_reads_as_tar_extracts_it(tmp_path: Path) -> None:
    archive, _ = genuine(tmp_path)
    report, code = check_against_tar(archive, tmp_path)
    assert code == 0 and report.intact and report.gzip_members == 1 and report.problems == []


def test_second_gzip_member_replacing_the_engine_is_caught(tmp_path: Path) -> None:
    """The red-team's archive: genuine entries (manifest included) without end-of-archive blocks, then a
    second gzip member with another rank0.engine and a run_me.sh."""
    _, stream = genuine(tmp_path)
    evil = tar_bytes([("rank0.engine", b"evil-engine" * 700), ("run_me.sh", b"#!/bin/sh\necho pwned\n")])
    archive = tmp_path / "trick.tar.gz"
    archive.write_bytes(gzip.compress(stream) + gzip.compress(evil))
    with tarfile.open(archive, mode="r|gz") as tf:  # the reader inspect used before: blind to member two
        assert "run_me.sh" not in [m.name for m in tf]
    report, code = check_against_tar(archive, tmp_path)
    assert code == 0  # tar unpacks it without a word
    assert report.contents["rank0.engine"] == (hashlib.sha256(b"evil-engine" * 700).hexdigest(), 7700)
    assert not report.intact and not report.ok
    assert report.gzip_members == 2
    assert [m.path for m in report.mismatched] == ["rank0.engine"]
    assert report.unlisted == ["run_me.sh"]
    text = format_report(report)
    assert "the archive is 2 gzip streams joined together" in text
    assert "rank0.engine: appears twice in the archive" in text
    assert "run_me.sh: in the archive but not listed in manifest.json" in text
    assert "verdict: NOT OK" in text


def test_member_after_the_end_marker_is_not_extracted_and_still_flagged(tmp_path: Path) -> None:
    archive, _ = genuine(tmp_path)
    joined = tmp_path / "joined.tar.gz"
    joined.write_bytes(archive.read_bytes() + gzip.compress(tar_bytes([("run_me.sh", b"echo hi\n")])))
    report, code = check_against_tar(joined, tmp_path)
    assert code == 0 and "run_me.sh" not in report.contents  # tar stops at the end-of-archive marker
    assert not report.intact and report.gzip_members == 2


def test_duplicate_names_in_one_member_keep_the_last(tmp_path: Path) -> None:
    files = [*FILES.items(), ("rank1.engine", b"replaced")]
    manifest = json.dumps(manifest_for(FILES)).encode()
    archive = tmp_path / "dupes.tar.gz"
    archive.write_bytes(gzip.compress(tar_bytes([*files, ("manifest.json", manifest)])))
    report, _ = check_against_tar(archive, tmp_path)
    assert report.contents["rank1.engine"][1] == len(b"replaced")
    assert [m.path for m in report.mismatched] == ["rank1.engine"]
    assert "rank1.engine: appears twice" in format_report(report)


def test_links_are_not_files(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [*FILES.items(), ("manifest.json", json.dumps(manifest_for(FILES)).encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, kind, target in (
            ("tokenizer.model", tarfile.SYMTYPE, "/etc/passwd"),
            ("vocab.json", tarfile.LNKTYPE, "config.json"),
        ):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    archive = tmp_path / "links.tar.gz"
    archive.write_bytes(gzip.compress(buf.getvalue()))
    report, _ = check_against_tar(archive, tmp_path)  # the hard link unpacks as a second copy of config.json...
    text = format_report(report)
    assert not report.intact
    assert "tokenizer.model: a symbolic link to '/etc/passwd'" in text
    assert "vocab.json: a hard link to 'config.json'" in text


def test_paths_out_of_the_target_dir(tmp_path: Path) -> None:
    members = [*FILES.items(), ("/tmp/abs.txt", b"x"), ("../up.txt", b"y"), ("a/../../up2.txt", b"z")]
    archive = tmp_path / "escape.tar.gz"
    archive.write_bytes(
        gzip.compress(tar_bytes([*members, ("manifest.json", json.dumps(manifest_for(FILES)).encode())]))
    )
    report = inspect_ok_machine(archive)
    code, on_disk = extracted_by_tar(archive, tmp_path / "x")
    assert code == 2 and "up.txt" not in on_disk  # GNU tar refuses `..` members...
    assert on_disk["tmp/abs.txt"][1] == 1  # ...but strips the leading `/` and unpacks the absolute one
    assert {k: v for k, v in on_disk.items() if k != "tmp/abs.txt"} == report.contents
    text = format_report(report)
    for raw in ("/tmp/abs.txt", "../up.txt", "a/../../up2.txt"):
        assert f"unsafe member path {raw!r}" in text
    assert not report.intact


def test_trailing_data_and_hidden_data(tmp_path: Path) -> None:
    archive, stream = genuine(tmp_path)
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(archive.read_bytes() + b"not gzip at all")
    report, code = check_against_tar(garbage, tmp_path)
    assert code == 2 and not report.intact
    assert "15 byte(s) follow the gzip data" in format_report(report)

    hidden = tmp_path / "hidden.tar.gz"  # an end-of-archive marker, then more data in the same member
    hidden.write_bytes(gzip.compress(stream + bytes(1024) + tar_bytes([("run_me.sh", b"echo hi\n")])))
    report, code = check_against_tar(hidden, tmp_path)
    assert code == 0 and "run_me.sh" not in report.contents
    assert "non-zero byte(s) after the end-of-archive marker" in format_report(report)

    no_end = tmp_path / "no-end.tar.gz"
    no_end.write_bytes(gzip.compress(stream))
    report, code = check_against_tar(no_end, tmp_path)
    assert code == 0 and report.files_verified == 4  # tar is silent, the files are right...
    assert not report.intact and "no end-of-archive marker" in format_report(report)  # ...but it was cut short


def test_names_set_by_pax_and_gnu_headers_are_read_as_tar_reads_them(tmp_path: Path) -> None:
    # a pax `path` record renames the member that follows, whatever its own header says
    pax = io.BytesIO()
    with tarfile.open(fileobj=pax, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("decoy.bin")
        info.size = 4
        info.pax_headers = {"path": "rank0.engine"}
        tar.addfile(info, io.BytesIO(b"evil"))
    archive = tmp_path / "pax.tar.gz"
    archive.write_bytes(gzip.compress(pax.getvalue()))
    report, _ = check_against_tar(archive, tmp_path)
    assert set(report.contents) == {"rank0.engine"}

    # an old-GNU header with bytes in the ustar `prefix` area: GNU tar reads them as times, Python's
    # tarfile as a folder name, so the two readers disagree on where the file goes
    gnu = bytearray(tar_bytes([("rank0.engine", b"evil")], fmt=tarfile.GNU_FORMAT))
    gnu[345:349] = b"evil"
    gnu[148:156] = b" " * 8
    gnu[148:156] = b"%06o\0 " % sum(gnu[:512])
    archive = tmp_path / "gnu.tar.gz"
    archive.write_bytes(gzip.compress(bytes(gnu)))
    with tarfile.open(archive) as tf:
        assert tf.getnames() == ["evil/rank0.engine"]
    report, code = check_against_tar(archive, tmp_path)
    assert code == 0 and set(report.contents) == {"rank0.engine"}
    assert "a header whose name tar implementations read differently" in format_report(report)


def test_damaged_gzip_is_unreadable(tmp_path: Path) -> None:
    archive, _ = genuine(tmp_path)
    data = bytearray(archive.read_bytes())
    data[-8] ^= 0xFF  # the CRC32 of the member
    bad = tmp_path / "crc.tar.gz"
    bad.write_bytes(bytes(data))
    assert subprocess.run(["tar", "-xzf", str(bad), "-C", str(tmp_path)], capture_output=True).returncode != 0
    with pytest.raises(VerifyError, match="truncated or not an archive"):
        inspect_archive(bad, gpus=[])


def test_sparse_members_stop_the_reading(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("rank0.engine")
        info.size = 4
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": "4096"}
        tar.addfile(info, io.BytesIO(b"data"))
    archive = tmp_path / "sparse.tar.gz"
    archive.write_bytes(gzip.compress(buf.getvalue()))
    report = inspect_ok_machine(archive)
    assert not report.intact and "'rank0.engine': a sparse file" in format_report(report)
