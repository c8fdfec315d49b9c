"""The build log: every line kept, a bounded and rate-limited stream shown (issue #14 item 13)."""

from __future__ import annotations

import json
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from conftest import CliRun
from test_pipeline_e2e import project_config

from trtllm_builder.run.buildlog import BuildLog, LogLimits


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate_then_budget(tmp_path: Path) -> None:
    clock = Clock()
    shown: list[str] = []
    limits = LogLimits(burst_lines=10, rate_per_s=2.0, bucket=4, max_lines=30, max_bytes=1 << 20, note_every_s=5.0)
    log = BuildLog(shown.append, limits=limits, clock=clock)
    log.open(tmp_path / "build.log")
    log("==> [1/1] s: run")
    log.start_output("s")
    for i in range(1000):  # 100 lines/s for 10 s
        clock.now = i / 100
        log.output(f"[s] line {i}")
    log.end_output()
    log.close()
    out = [line for line in shown if line.startswith("[s] line ")]
    assert out[:10] == [f"[s] line {i}" for i in range(10)]  # the burst
    # then the bucket (4) and 2 lines/s over the ~10 s: about 4 + 20
    assert 20 <= len(out) - 10 <= 26, len(out)
    notes = [line for line in shown if "lines not shown" in line]
    assert len(notes) == 2 and notes[0].startswith("[s] ... ") and "(more than 2 lines/s)" in notes[0]
    assert shown.index(notes[0]) < shown.index(out[15])  # at once when lines start being held back
    assert shown[-1] == (
        f"[s] {1000 - len(out)} of 1000 output lines were not shown (the log is bounded); "
        "every line is kept in build.log (work dir; packed in the archive)"
    )
    kept = (tmp_path / "build.log").read_text().splitlines()
    assert kept[0] == "==> [1/1] s: run"
    assert [line for line in kept if line.startswith("[s] line ")] == [f"[s] line {i}" for i in range(1000)]


def test_the_budget_spans_the_build_and_notes_are_always_shown(tmp_path: Path) -> None:
    clock = Clock()
    shown: list[str] = []
    log = BuildLog(shown.append, limits=LogLimits(burst_lines=100, max_lines=150, note_every_s=1.0), clock=clock)
    for step in ("a", "b"):
        log.start_output(step)
        for i in range(100):
            log.output(f"[{step}] {i}")
        log(f"[{step}] still running: ...")  # a runner note: never held back
        clock.now += 2
        log.output(f"[{step}] last")
        log.end_output()
    assert len([s for s in shown if s.startswith("[a] ") and s[4:].isdigit()]) == 100
    assert "[a] last" in shown  # 101 of a's lines shown: 49 left in the build's budget for b
    assert len([s for s in shown if s.startswith("[b] ") and s[4:].isdigit()]) == 49
    assert "[a] still running: ..." in shown and "[b] still running: ..." in shown
    assert any(s.startswith("[b] ... ") and "the build's log budget is spent" in s for s in shown)


def test_lines_before_the_file_opens_are_kept_and_secrets_masked(tmp_path: Path) -> None:
    shown: list[str] = []
    log = BuildLog(shown.append, secrets=["hf_SECRETTOKEN123"])
    log("note: using hf_SECRETTOKEN123")
    log.open(tmp_path / "build.log")
    log("later")
    log.close()
    assert shown == ["note: using **********", "later"]
    assert (tmp_path / "build.log").read_text() == "note: using **********\nlater\n"


def test_a_chatty_step_through_the_cli(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    n = 50_000
    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    out = tmp_path / "e.tar.gz"
    start = time.monotonic()
    res = run_cli("build", str(cfg), "-o", str(out), env={"STANDIN_CHATTY": f"convert_checkpoint.py:{n}"})
    took = time.monotonic() - start
    assert res.returncode == 0, res.stderr[-3000:]
    shown = [line for line in res.stderr.splitlines() if "convert_checkpoint.py: line " in line]
    assert 500 <= len(shown) < 1000 and shown[0] == "[convert] [standin] convert_checkpoint.py: line 0"
    assert "output lines were not shown (the log is bounded); every line is kept in build.log" in res.stderr
    with tarfile.open(out) as tar:
        member = tar.extractfile("build.log")
        assert member is not None
        full = member.read().decode().splitlines()
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    # the step records carry the runner's last figures: the build step's output dir is what was packed
    sizes = {f["path"]: f["size"] for f in manifest["files"]}
    convert, build = manifest["steps"]
    assert build["output_bytes"] == sizes["rank0.engine"] + sizes["config.json"]
    assert convert["output_bytes"] > 0 and all(s["peak_rss_bytes"] > 1 << 20 for s in (convert, build))
    assert "build.log" in sizes
    assert len([line for line in full if "convert_checkpoint.py: line " in line]) == n
    assert full[0].startswith("work dir: ") and any(line.startswith("==> [2/2] build:") for line in full)
    assert took < 60
