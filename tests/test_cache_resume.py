"""Step cache, resume and the disk budget, through the real CLI and stand-in steps."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
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


# --- damaged entries: verified on reuse, discarded and rebuilt (issue #14, item 4) -------------------


def entry_of(tmp_path: Path, step: str) -> Path:
    """The cached output folder of ``step`` (its only entry)."""
    (entry,) = [e for e in cache_entries(tmp_path) if json.loads((e / "meta.json").read_text())["step"] == step]
    return entry / "output"


def inspect_ok(run_cli: CliRun, archive: Path) -> None:
    res = run_cli("inspect", str(archive))
    assert "integrity: ok" in res.stdout, res.stdout


@pytest.mark.parametrize(
    ("step", "damage", "what"),
    [
        ("build", lambda out: (out / "rank0.engine").write_bytes(b"x" * 100), "rank0.engine has 100 bytes"),
        ("build", lambda out: (out / "rank1.engine").unlink(), "rank1.engine is missing"),
        (
            "build",
            lambda out: (out / "config.json").write_text((out / "config.json").read_text().replace("4", "5")),
            "config.json's sha256 is",
        ),
        ("convert", lambda out: (out / "config.json").write_text("{}"), "config.json has 2 bytes"),
    ],
    ids=["truncated-engine", "deleted-rank", "edited-engine-config", "edited-checkpoint-config"],
)
def test_damaged_entry_is_discarded_and_the_step_rerun(
    run_cli: CliRun,
    tmp_path: Path,
    tiny_model: Callable[..., Path],
    step: str,
    damage: Callable[[Path], object],
    what: str,
) -> None:
    model = tiny_model("llama")
    cfg = project_config(tmp_path, model, "llama", tp=2)
    assert run_cli("build", str(cfg), "-o", str(tmp_path / "a.tar.gz")).returncode == 0
    damage(entry_of(tmp_path, step))
    if step == "convert":  # the engine is intact, so a repeat build never reads the checkpoint: change the build
        cfg = project_config(tmp_path, model, "llama", tp=2, build_args=", max_beam_width: 2", name="c2.yaml")
    res = run_cli("build", str(cfg), "-o", str(tmp_path / "b.tar.gz"))
    assert res.returncode == 0, res.stderr
    assert f"[{step}] step cache entry" in res.stderr and what in res.stderr
    assert f"discarded; running `{step}` again" in res.stderr
    assert ran(tmp_path).count("convert_checkpoint.py" if step == "convert" else "trtllm-build") == 2
    inspect_ok(run_cli, tmp_path / "b.tar.gz")
    manifest = manifest_of(tmp_path / "b.tar.gz")
    assert {f["path"]: f["size"] for f in manifest["files"]}["rank0.engine"] == 65536
    # the rebuilt entry is sound: a third build reuses it, verified
    res = run_cli("build", str(cfg), "-o", str(tmp_path / "c.tar.gz"))
    assert res.returncode == 0 and "is damaged" not in res.stderr
    assert "reused from the step cache" in res.stderr and "; verified)" in res.stderr


def test_unread_entries_are_not_hashed_and_missing_ones_skipped(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    """With the engine cached, the checkpoint is read by nothing: a repeat build neither verifies it nor,
    when it is gone (dropped to save disk, evicted), runs `convert` again."""
    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    assert run_cli("build", str(cfg), "-o", str(tmp_path / "a.tar.gz")).returncode == 0
    (entry_of(tmp_path, "convert") / "config.json").write_text("{}")  # damaged, but never read
    res = run_cli("build", str(cfg), "-o", str(tmp_path / "b.tar.gz"))
    assert res.returncode == 0, res.stderr
    assert "is damaged" not in res.stderr and "not verified, since no step that runs reads it" in res.stderr
    (entry_of(tmp_path, "convert") / "rank0.safetensors").unlink()  # no checkpoint at all any more
    res = run_cli("build", str(cfg), "-o", str(tmp_path / "b2.tar.gz"))
    assert res.returncode == 0, res.stderr
    assert "[convert] step cache entry" in res.stderr
    assert "discarded; no step that runs needs it, so it is skipped" in res.stderr
    res = run_cli("build", str(cfg), "-o", str(tmp_path / "c.tar.gz"))  # the entry is gone
    assert res.returncode == 0, res.stderr
    assert "<== convert: skipped: not in the step cache, and no step that runs needs its output" in res.stderr
    assert ran(tmp_path) == ["convert_checkpoint.py", "trtllm-build"]
    steps = manifest_of(tmp_path / "c.tar.gz")["steps"]
    assert [(s["name"], s["skipped"], s["cached"], s["exit_code"]) for s in steps] == [
        ("convert", True, False, None),
        ("build", False, True, 0),
    ]
    inspect_ok(run_cli, tmp_path / "c.tar.gz")


def test_old_entry_without_checksums_is_rebuilt(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    assert run_cli("build", str(cfg), "-o", str(tmp_path / "a.tar.gz")).returncode == 0
    meta_path = entry_of(tmp_path, "build").parent / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["files"]  # as the step cache of an earlier trtllm-builder wrote it
    meta_path.write_text(json.dumps(meta))
    res = run_cli("build", str(cfg), "-o", str(tmp_path / "b.tar.gz"))
    assert res.returncode == 0, res.stderr
    assert "it has no checksums (written by an older trtllm-builder)" in res.stderr
    assert ran(tmp_path) == ["convert_checkpoint.py", "trtllm-build", "trtllm-build"]


# --- disk within budget (issue #15): keep only what resume needs when everything does not fit --------


def model_bytes(model: Path) -> int:
    return sum(p.stat().st_size for p in model.rglob("*") if p.is_file())


def test_tight_disk_keeps_only_what_resume_needs(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    """Keeping checkpoint + engine + archive (3x the local model) does not fit a 2.5x budget, keeping
    the engine and the archive (2x) does: the checkpoint is dropped once the engine is verified."""
    model = tiny_model("llama")
    cfg = project_config(tmp_path, model, "llama")
    budget = str(int(2.5 * model_bytes(model)))
    res = run_cli("build", str(cfg), "-o", str(tmp_path / "a.tar.gz"), "--disk-budget", budget)
    assert res.returncode == 0, res.stderr
    assert "disk: keeping every step's output in the step cache would take about" in res.stderr
    assert "more than the disk budget" in res.stderr and "keeps only what resume needs" in res.stderr
    dropped = [line for line in res.stderr.splitlines() if line.startswith("[convert] dropped its cached checkpoint")]
    assert len(dropped) == 1 and "no later step reads it" in dropped[0], res.stderr
    assert [json.loads((e / "meta.json").read_text())["step"] for e in cache_entries(tmp_path)] == ["build"]
    inspect_ok(run_cli, tmp_path / "a.tar.gz")
    # the repeat build needs nothing it dropped: the engine comes from the cache, convert is skipped
    res = run_cli("build", str(cfg), "-o", str(tmp_path / "b.tar.gz"), "--disk-budget", budget)
    assert res.returncode == 0, res.stderr
    assert "<== convert: skipped" in res.stderr and "reused from the step cache" in res.stderr
    assert ran(tmp_path) == ["convert_checkpoint.py", "trtllm-build"]
    # with room again, nothing is dropped
    res = run_cli("build", str(project_config(tmp_path, model, "llama", tp=2, name="c2.yaml")), "-o",
                  str(tmp_path / "c.tar.gz"))  # fmt: skip
    assert res.returncode == 0 and "dropped its cached" not in res.stderr and "disk:" not in res.stderr


def test_tight_disk_still_resumes_a_failed_build(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    model = tiny_model("llama")
    cfg = project_config(tmp_path, model, "llama")
    budget = str(int(2.5 * model_bytes(model)))
    res = run_cli("build", str(cfg), "--disk-budget", budget, env={"STANDIN_FAIL": "trtllm-build"})
    assert res.returncode == 1 and "dropped its cached" not in res.stderr  # the checkpoint is what resume needs
    res = run_cli("build", str(cfg), "-o", str(tmp_path / "e.tar.gz"), "--disk-budget", budget)
    assert res.returncode == 0, res.stderr
    assert ran(tmp_path) == ["convert_checkpoint.py", "trtllm-build", "trtllm-build"]
    assert "[convert] dropped its cached checkpoint" in res.stderr


def test_budget_too_small_for_any_mode_fails_before_a_step(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    model = tiny_model("llama")
    cfg = project_config(tmp_path, model, "llama")
    res = run_cli("build", str(cfg), "--disk-budget", str(int(1.5 * model_bytes(model))))
    assert res.returncode == 2
    assert "more than the disk budget" in res.stderr and "nothing was downloaded or built" in res.stderr
    assert ran(tmp_path) == []


def test_hashing_a_large_output_prints_progress(tmp_path: Path) -> None:
    """Checksumming (on store) and verifying (on reuse) a large engine takes a while: progress lines, from
    the calling thread, as for packing. A FIFO fed slowly stands in for a file that takes seconds to read."""
    from trtllm_builder.progress import ProgressMeter
    from trtllm_builder.run.stepcache import _hash_files

    fifo = tmp_path / "rank0.engine"
    os.mkfifo(fifo)
    chunk = os.urandom(1 << 20)

    def feed() -> None:
        with fifo.open("wb") as fh:
            for _ in range(4):
                fh.write(chunk)
                fh.flush()
                time.sleep(0.3)

    writer = threading.Thread(target=feed)
    writer.start()
    lines: list[tuple[str, threading.Thread]] = []
    meter = ProgressMeter("verify build", 4 << 20, lambda line: lines.append((line, threading.current_thread())),
                          interval=0.1)  # fmt: skip
    (digest,) = _hash_files([fifo], meter)
    writer.join()
    assert digest == hashlib.sha256(chunk * 4).hexdigest()
    assert {t for _, t in lines} == {threading.current_thread()}
    texts = [line for line, _ in lines]
    assert len(texts) >= 3 and all(t.startswith("verify build: ") for t in texts)
    assert "(100%) in" in texts[-1]


def test_entry_changed_after_its_verification_is_not_packed(
    standin_env: dict[str, str], tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    """The packer checks each engine file's sha256 against the entry's record: an engine overwritten
    between the reuse check and packing (here: by the log callback, right after the reuse line) fails
    the build instead of being packed as verified."""
    from trtllm_builder.errors import PackagingError
    from trtllm_builder.pipeline import BuildOptions, build, prepare

    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    config, plan = prepare(cfg, work_dir=tmp_path / "w")
    cache = tmp_path / "cache"
    build(config, plan, BuildOptions(output=tmp_path / "a.tar.gz", cache_dir=cache, log=lambda _: None))

    def tamper(line: str) -> None:
        if line.startswith("<== build: reused from the step cache") and "; verified)" in line:
            engine = entry_of(tmp_path, "build") / "rank0.engine"
            data = bytearray(engine.read_bytes())
            data[-1] ^= 0xFF  # same size, other bytes
            engine.write_bytes(bytes(data))

    with pytest.raises(PackagingError) as err:
        build(config, plan, BuildOptions(output=tmp_path / "b.tar.gz", cache_dir=cache, log=tamper))
    assert "rank0.engine" in str(err.value) and "no longer matches the step cache record of `build`" in str(err.value)
    assert not (tmp_path / "b.tar.gz").exists()
    # the next build finds the entry damaged, discards it and builds the engine again
    lines: list[str] = []
    build(config, plan, BuildOptions(output=tmp_path / "c.tar.gz", cache_dir=cache, log=lines.append))
    assert any("is damaged" in line and "rank0.engine's sha256" in line for line in lines)
    assert ran(tmp_path).count("trtllm-build") == 2
