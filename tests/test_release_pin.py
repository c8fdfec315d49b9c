"""`trtllm.version`: a config written for one TensorRT-LLM release is refused under another, before
anything runs; and the archive names the serving runtimes of the release that built it."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CliRun

from trtllm_builder.plan.versions import RELEASES, serving_runtime, version_mismatch


def _config(path: Path, model: Path, version: str | None) -> Path:
    pin = f", version: '{version}'" if version else ""
    path.write_text(
        f"""\
model: {{id: {model}}}
trtllm: {{example: gpt{pin}}}
steps:
  - {{name: convert, script: convert_checkpoint.py, args: {{dtype: float16}}}}
  - {{name: build, command: trtllm-build, args: {{max_batch_size: 1, max_seq_len: 64}}}}
"""
    )
    return path


@pytest.mark.parametrize("standin_release", ["0.21.0"])
def test_a_build_under_another_release_is_refused_before_anything_runs(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path], standin_release: str
) -> None:
    cfg = _config(tmp_path / "c.yaml", tiny_model("gpt2"), "1.2.1")
    for command in ("plan", "build"):
        res = run_cli(command, str(cfg))
        assert res.returncode == 2, res.stderr
        assert "requires TensorRT-LLM 1.2.1 (`trtllm.version`), but this machine has TensorRT-LLM 0.21.0" in res.stderr
        assert "TRTLLM_VERSION=1.2.1" in res.stderr
    log = Path(tmp_path / "standin.log")
    ran = [json.loads(line)["script"] for line in log.read_text().splitlines()] if log.exists() else []
    # only the machine query may have run (the CLI asks nvidia-smi while it plans): no step, no parser read
    assert [r for r in ran if r != "nvidia-smi"] == [], f"nothing may run, not even a parser read: {ran}"


def test_the_matching_release_builds_and_the_archive_names_its_runtimes(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    cfg = _config(tmp_path / "c.yaml", tiny_model("gpt2"), "1.2.1")
    out = tmp_path / "e.tar.gz"
    res = run_cli("build", str(cfg), "-o", str(out))
    assert res.returncode == 0, res.stderr
    with tarfile.open(out) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = json.loads(member.read())
    assert manifest["trtllm"]["version"] == "1.2.1"
    assert manifest["serving"]["tritonserver"] == list(RELEASES["1.2.1"].tritonserver)
    shown = run_cli("inspect", str(out))
    assert "serve with: TensorRT-LLM 1.2.1, e.g. nvcr.io/nvidia/tritonserver:26.04-trtllm-python-py3" in shown.stdout


def test_mismatch_rules() -> None:
    assert version_mismatch(None, "1.2.1") is None
    assert version_mismatch("1.2.1", "1.2.1") is None
    text = version_mismatch("1.2", "1.2.1")
    assert text is not None and "an image of that release" in text  # no prefix matching: 1.2 is not 1.2.1
    assert "no readable TensorRT-LLM version" in (version_mismatch("0.21.0", None) or "")
    assert serving_runtime("0.7.1") is None


def test_the_version_must_look_like_a_release(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    cfg = _config(tmp_path / "c.yaml", tiny_model("gpt2"), "latest")
    res = run_cli("plan", str(cfg))
    assert res.returncode == 2
    assert "trtllm.version" in res.stderr
