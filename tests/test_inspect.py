"""inspect: stream-verify an archive against its manifest; GPU and version compatibility; GPU detection."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import sys
import tarfile
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from trtllm_builder.errors import VerifyError
from trtllm_builder.gpu import GpuInfo, detect_gpus, parse_nvidia_smi_csv
from trtllm_builder.inspect import format_report, inspect_archive
from trtllm_builder.versions import trtllm_version

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
