"""Issue #14 item 2: the model dir (local or a cached snapshot) is never a write target.

Every case goes through the real CLI: ``plan`` refuses (exit 2) and ``build`` refuses before any step
runs, and the model's files are byte-for-byte what they were.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CliRun

from trtllm_builder.run.workdir import MARKER


def config(tmp_path: Path, model: Path | str, *, convert: str = "", build: str = "", convert_extra: str = "") -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"""\
model: {{id: {model}}}
trtllm: {{example: llama}}
steps:
  - name: convert
    script: convert_checkpoint.py
    args: {{dtype: float16{convert}}}
{convert_extra}  - name: build
    command: trtllm-build
    args: {{max_batch_size: 4, max_seq_len: 256{build}}}
"""
    )
    return cfg


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*")
            if p.is_file()}  # fmt: skip


def steps_run(log: Path) -> list[str]:
    if not log.exists():
        return []
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return [c["script"] for c in calls if c["argv"] != ["--help"] and c["script"] != "nvidia-smi"]


def refused(run_cli: CliRun, cfg: Path, tmp_path: Path, standin_env: dict[str, str], *extra: str) -> str:
    """``plan`` and ``build`` both refuse (exit 2), no step runs; returns plan's message."""
    plan = run_cli("plan", str(cfg), *extra)
    assert plan.returncode == 2, plan.stdout
    build = run_cli("build", str(cfg), "-o", str(tmp_path / "e.tar.gz"), *extra)
    assert build.returncode == 2, build.stderr
    assert build.stderr.splitlines()[0] == plan.stderr.splitlines()[0]  # the same refusal
    assert steps_run(Path(standin_env["STANDIN_LOG"])) == []
    assert not (tmp_path / "e.tar.gz").exists()
    return plan.stderr


CASES = {
    "timing cache over the tokenizer": (
        {"build": ", output_timing_cache: '{model_dir}/tokenizer.json'"},
        "step `build`: `--output_timing_cache` `{model_dir}/tokenizer.json` is inside the model dir",
    ),
    "a step's output dir through the model link": (
        {"convert_extra": "    output_dir: model/ckpt\n"},
        "step `convert`: the output dir `",
    ),
    "an output flag into the model": (
        {"convert": ", output_dir: '{model_dir}/ckpt'"},
        "the output dir may only use {work_dir}",  # refused before: an output dir is tool-owned
    ),
    "the work dir's link, spelled out": (
        {"build": ", visualize_network: '{work_dir}/model/onnx'"},
        "step `build`: `--visualize_network` `{work_dir}/model/onnx` is inside the model dir",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_writes_into_the_local_model_are_refused(case: str, run_cli: CliRun, standin_env: dict[str, str],
                                                 tmp_path: Path, tiny_model: Callable[..., Path]) -> None:  # fmt: skip
    model = tiny_model("llama")
    before = digest(model)
    kwargs, message = CASES[case]
    err = refused(run_cli, config(tmp_path, model, **kwargs), tmp_path, standin_env)
    assert message in err, err
    if "inside the model dir" in message:
        assert "the model dir is never a write target" in err
    assert digest(model) == before


def test_a_link_in_the_work_dir_to_the_model_is_followed(run_cli: CliRun, standin_env: dict[str, str],
                                                        tmp_path: Path, tiny_model: Callable[..., Path]) -> None:  # fmt: skip
    model = tiny_model("llama")
    work = tmp_path / "w"
    work.mkdir()
    (work / MARKER).write_text("")  # a work dir the tool owns (kept from an earlier run)
    (work / "alias").symlink_to(model, target_is_directory=True)
    cfg = config(tmp_path, model, build=", output_timing_cache: ./alias/tokenizer.json")
    err = refused(run_cli, cfg, tmp_path, standin_env, "--work-dir", str(work))
    assert f"`--output_timing_cache` `./alias/tokenizer.json` is inside the model dir ({model.resolve()}" in err


def test_a_local_model_inside_the_work_dir_is_still_read_only(
    run_cli: CliRun, standin_env: dict[str, str], tmp_path: Path
) -> None:
    from modelgen import make_tiny_model

    work = tmp_path / "w"
    model = make_tiny_model(work / "mine", "llama")
    cfg = config(tmp_path, model, convert_extra="    output_dir: mine/ckpt\n")
    err = refused(run_cli, cfg, tmp_path, standin_env, "--work-dir", str(work))
    assert "step `convert`: the output dir `" in err and "mine/ckpt` is inside the model dir" in err


def test_a_work_dir_inside_the_model_is_refused(run_cli: CliRun, standin_env: dict[str, str], tmp_path: Path,
                                               tiny_model: Callable[..., Path]) -> None:  # fmt: skip
    model = tiny_model("llama")
    err = refused(run_cli, config(tmp_path, model), tmp_path, standin_env, "--work-dir", str(model / "work"))
    assert f"the work dir {model / 'work'} is inside the model dir {model.resolve()}" in err
    assert not (model / "work").exists()


def test_the_model_cache_is_never_written(run_cli: CliRun, standin_env: dict[str, str], tmp_path: Path,
                                         tiny_model: Callable[..., Path]) -> None:  # fmt: skip
    cache = Path(standin_env["TRTLLM_BUILDER_CACHE"])
    snapshot = cache / "models" / "org--tiny" / ("a" * 40)
    snapshot.mkdir(parents=True)
    cfg = config(tmp_path, tiny_model("llama"), build=f", output_timing_cache: {snapshot}/tokenizer.json")
    err = refused(run_cli, cfg, tmp_path, standin_env)
    assert f"`--output_timing_cache` `{snapshot}/tokenizer.json` is inside the model dir" in err


def test_reading_the_model_dir_is_fine(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    model = tiny_model("llama")
    (model / "timing.cache").write_bytes(b"cache")
    cfg = config(tmp_path, model, build=", input_timing_cache: '{model_dir}/timing.cache'")
    res = run_cli("build", str(cfg), "-o", str(tmp_path / "e.tar.gz"))
    assert res.returncode == 0, res.stderr
