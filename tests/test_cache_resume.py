"""Step cache, resume and the disk budget, through the real CLI and stand-in steps."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from conftest import CliRun, assert_processes_gone, start_hanging_build
from test_pipeline_e2e import project_config, standin_calls, unpack


def manifest_of(archive: Path) -> dict:
    with tarfile.open(archive) as tf:
        return json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]


def ran(tmp_path: Path) -> list[str]:
    return [c["script"] for c in standin_calls(tmp_path / "standin.log")]


def cache_entries(tmp_path: Path) -> list[Path]:
    root = tmp_path / "cache" / "steps"
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.exists() else []


def test_repeat_build_reuses_every_step(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    cfg = project_config(tmp_path, tiny_model("llama"), "llama", tp=2)
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    assert run_cli("build", str(cfg), "-o", str(a)).returncode == 0
    assert ran(tmp_path) == ["convert_checkpoint.py", "trtllm-build"]
    res = run_cli("build", str(cfg), "-o", str(b))
    assert res.returncode == 0, res.stderr
    assert ran(tmp_path) == ["convert_checkpoint.py", "trtllm-build"]  # nothing ran again
    assert "reused from the step cache" in res.stderr
    assert [s["cached"] for s in manifest_of(a)["steps"]] == [False, False]
    assert [s["cached"] for s in manifest_of(b)["steps"]] == [True, True]
    files = lambda m: {f["path"]: f["sha256"] for f in m["files"] if f["path"] != "build.log"}  # noqa: E731  (the log differs)
    assert files(manifest_of(a)) == files(manifest_of(b))
    unpack(b, tmp_path / "x")


def test_changed_build_args_rerun_only_the_build(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    model = tiny_model("llama")
    assert (
        run_cli("build", str(project_config(tmp_path, model, "llama")), "-o", str(tmp_path / "a.tar.gz")).returncode
        == 0
    )
    cfg2 = project_config(tmp_path, model, "llama", build_args=", max_beam_width: 2", name="c2.yaml")
    res = run_cli("build", str(cfg2), "-o", str(tmp_path / "b.tar.gz"))
    assert res.returncode == 0, res.stderr
    assert ran(tmp_path) == ["convert_checkpoint.py", "trtllm-build", "trtllm-build"]


def test_changed_local_model_misses_the_cache(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    model = tiny_model("llama")
    cfg = project_config(tmp_path, model, "llama")
    assert run_cli("build", str(cfg), "-o", str(tmp_path / "a.tar.gz")).returncode == 0
    cfg_json = json.loads((model / "config.json").read_text())
    cfg_json["rms_norm_eps"] = 1e-6
    (model / "config.json").write_text(json.dumps(cfg_json))
    assert run_cli("build", str(cfg), "-o", str(tmp_path / "b.tar.gz")).returncode == 0
    assert ran(tmp_path).count("convert_checkpoint.py") == 2


def test_failed_build_resumes_at_the_failed_step(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    res = run_cli("build", str(cfg), env={"STANDIN_FAIL": "trtllm-build"})
    assert res.returncode == 1
    res = run_cli("build", str(cfg), "-o", str(tmp_path / "e.tar.gz"))
    assert res.returncode == 0, res.stderr
    assert ran(tmp_path) == ["convert_checkpoint.py", "trtllm-build", "trtllm-build"]
    assert [s["cached"] for s in manifest_of(tmp_path / "e.tar.gz")["steps"]] == [True, False]


def test_killed_build_resumes_and_leaves_no_half_entry(
    standin_env: dict[str, str], run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    """SIGKILL of the whole tool mid-step (a crashed server): the next run resumes from the cache."""
    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    proc, pidfile = start_hanging_build(standin_env, cfg, tmp_path, stderr=subprocess.DEVNULL, start_new_session=True)
    os.killpg(proc.pid, signal.SIGKILL)  # the tool and everything it started, as a crash would
    proc.wait(timeout=10)
    for pid in map(int, pidfile.read_text().split()):  # the hanging step lives in its own group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    assert_processes_gone(pidfile)
    entries = cache_entries(tmp_path)
    assert len(entries) == 1 and json.loads((entries[0] / "meta.json").read_text())["step"] == "convert"
    res = run_cli("build", str(cfg), "-o", str(tmp_path / "e.tar.gz"))
    assert res.returncode == 0, res.stderr
    assert ran(tmp_path).count("convert_checkpoint.py") == 1


def test_concurrent_builds_share_the_cache(
    standin_env: dict[str, str], tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    env = {**standin_env, "STANDIN_SLEEP": "1.5"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trtllm_builder",
                "build",
                str(cfg),
                "-o",
                str(tmp_path / f"{i}.tar.gz"),
                "--work-dir",
                str(tmp_path / f"w{i}"),
            ],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert ran(tmp_path) == ["convert_checkpoint.py", "trtllm-build"]  # each step computed once
    assert any("waiting for it" in err for _, err in results)
    for i in range(2):
        unpack(tmp_path / f"{i}.tar.gz", tmp_path / f"x{i}")


def test_no_cache_keeps_nothing_and_frees_the_checkpoint(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    res = run_cli("build", str(cfg), "-o", str(tmp_path / "e.tar.gz"), "--no-cache")
    assert res.returncode == 0, res.stderr
    assert cache_entries(tmp_path) == []
    assert "[convert] output deleted: no later step needs it (disk budget)" in res.stderr
    unpack(tmp_path / "e.tar.gz", tmp_path / "x")


def test_lru_eviction_keeps_the_cache_bounded(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    model = tiny_model("llama")
    env = {"STANDIN_ENGINE_BYTES": str(1 << 20)}
    for i, beams in enumerate((1, 2, 3)):
        cfg = project_config(tmp_path, model, "llama", build_args=f", max_beam_width: {beams}", name=f"c{i}.yaml")
        res = run_cli("build", str(cfg), "-o", str(tmp_path / f"{i}.tar.gz"), "--cache-max-size", "2.5M", env=env)
        assert res.returncode == 0, res.stderr
        time.sleep(0.05)
    metas = [json.loads((e / "meta.json").read_text()) for e in cache_entries(tmp_path)]
    assert sum(m["size"] for m in metas) <= 2.5 * (1 << 20)
    assert "step cache: evicted" in res.stderr
    # the newest build's engine survived; the shared convert step was the most recently used entry
    assert {m["step"] for m in metas} >= {"build"}


def test_bad_cache_size(run_cli: CliRun, tmp_path: Path) -> None:
    res = run_cli("build", "x.yaml", "--cache-max-size", "lots")
    assert res.returncode == 2 and "is not a size" in res.stderr
