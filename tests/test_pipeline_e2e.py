"""`plan` and `build` end to end: the real CLI in a subprocess, against the stand-in TensorRT-LLM tree."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import OLD_RELEASE, ROOT, STANDIN_BIN, CliRun, assert_processes_gone, start_hanging_build, tree_dir

SEED = ROOT / "examples" / "cog-trt-llm" / "tiny-gpt2.yaml"


def project_config(
    tmp_path: Path,
    model: Path,
    example: str,
    *,
    tp: int = 1,
    extra_steps: str = "",
    name: str = "c.yaml",
    convert_args: str = "",
    build_args: str = "",
) -> Path:
    cfg = tmp_path / name
    cfg.write_text(
        f"""\
model:
  id: {model}
trtllm:
  example: {example}
steps:
  - name: convert
    script: convert_checkpoint.py
    args: {{dtype: float16, tp_size: {tp}{convert_args}}}
  - name: build
    command: trtllm-build
    args: {{gemm_plugin: auto, max_batch_size: 4, max_seq_len: 256{build_args}}}
{extra_steps}"""
    )
    return cfg


def unpack(archive: Path, dest: Path) -> dict:
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(dest)], check=True)
    manifest = json.loads((dest / "manifest.json").read_text())
    on_disk = sorted(
        p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() and p.name != "manifest.json"
    )
    assert on_disk == sorted(f["path"] for f in manifest["files"])
    for f in manifest["files"]:
        data = (dest / f["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
        assert len(data) == f["size"]
    return manifest


def standin_calls(env_log: Path, *, parser_reads: bool = False) -> list[dict]:
    """The steps the stand-ins were run as; reading a parser (``--help``) or the GPUs is not running a step."""
    if not env_log.exists():
        return []
    calls = [json.loads(line) for line in env_log.read_text().splitlines() if line.strip()]
    if parser_reads:
        return calls
    return [c for c in calls if c["argv"] != ["--help"] and c["script"] != "nvidia-smi"]


# --- plan ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("standin_release", [OLD_RELEASE])
def test_plan_json_for_seed_config_on_the_old_tree(run_cli: CliRun, tmp_path: Path) -> None:
    """Against a tree that still has the old scripts the seed config runs its own scripts and flags;
    only paths change: the model, the tool-owned step dirs, and earlier outputs by name."""
    res = run_cli("plan", str(SEED), "--json", "--work-dir", str(tmp_path / "w"))
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    work = tmp_path / "w"
    convert, build = plan["steps"]
    assert [s["name"] for s in plan["steps"]] == ["convert_to_ft", "build"]
    assert convert["argv"][1] == str(tree_dir(OLD_RELEASE) / "examples" / "gpt" / "hf_gpt_convert.py")
    assert convert["argv"][2:] == [
        "--out-dir",
        str(work / "steps" / "convert_to_ft"),
        "--in-file",
        str(work / "model"),
        "--tensor-parallelism",
        "1",
        "--storage-type",
        "float16",
    ]
    assert convert["cwd"] == str(work) and convert["output_dir"] == str(work / "steps" / "convert_to_ft")
    assert build["argv"][1].endswith("examples/gpt/build.py")
    assert build["argv"][2:] == [
        "--output_dir",
        str(work / "steps" / "build"),
        "--model_dir",  # at run time: the sub-folder the converter really wrote (<out>/1-gpu)
        str(work / "steps" / "convert_to_ft"),
        "--use_gpt_attention_plugin",
        "--remove_input_padding",
    ]
    assert plan["translation"]["release"] == OLD_RELEASE
    assert plan["translation"]["config"]["steps"][1]["args"]["model_dir"] == "{steps.convert_to_ft.output_dir}"
    assert not (tmp_path / "w").exists()  # plan touches nothing
    assert standin_calls(tmp_path / "standin.log") == []  # and runs nothing


def test_plan_injects_dirs_for_project_form(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    cfg = project_config(tmp_path, tiny_model("llama"), "llama", tp=2)
    res = run_cli("plan", str(cfg), "--json", "--work-dir", str(tmp_path / "w"))
    assert res.returncode == 0, res.stderr
    convert, build = json.loads(res.stdout)["steps"]
    w = tmp_path / "w"
    assert convert["argv"][1].endswith("examples/models/core/llama/convert_checkpoint.py")
    assert convert["argv"][2:6] == ["--model_dir", str(w / "model"), "--output_dir", str(w / "steps" / "convert")]
    assert build["argv"][0] == str(STANDIN_BIN / "trtllm-build")
    assert build["argv"][1:5] == [
        "--checkpoint_dir",
        str(w / "steps" / "convert"),
        "--output_dir",
        str(w / "steps" / "build"),
    ]


def test_plan_human_output(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    res = run_cli("plan", str(project_config(tmp_path, tiny_model("gpt2"), "gpt")))
    assert res.returncode == 0, res.stderr
    assert (
        "[1/2] convert" in res.stdout and "[2/2] build" in res.stdout and "trtllm-build --checkpoint_dir" in res.stdout
    )


PLAN_ERRORS = {
    "unknown example": ("example: llama", "example: lama", r"example `lama` is not in .*did you mean `llama`"),
    "missing script": (
        "script: convert_checkpoint.py",
        "script: convert.py",
        r"script `convert.py` is not in example `llama`.*did you mean `convert_checkpoint.py`",
    ),
    "abs path outside": (
        "dtype: float16",
        "dtype: float16, calib_dataset: /etc/passwd",
        r"absolute path `/etc/passwd` is outside the work dir",
    ),
    "dotdot arg": (
        "dtype: float16",
        "dtype: float16, calib_dataset: ../../../etc",
        r"`../../../etc` escapes the work dir",
    ),
    "unknown placeholder": (
        "dtype: float16",
        "dtype: float16, calib_dataset: '{modle_dir}/x'",
        r"unknown placeholder `\{modle_dir\}`.*did you mean `\{model_dir\}`",
    ),
    "later step placeholder": (
        "dtype: float16",
        "dtype: float16, calib_dataset: '{steps.build.output_dir}'",
        r"names `build`, which is not an earlier step",
    ),
    "output outside work dir": (
        "dtype: float16",
        "dtype: float16, output_dir: /tmp/elsewhere",
        r"`/tmp/elsewhere` is outside the work dir",
    ),
}


@pytest.mark.parametrize("case", sorted(PLAN_ERRORS))
def test_plan_errors_exit_2(case: str, run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    old, new, pattern = PLAN_ERRORS[case]
    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    cfg.write_text(cfg.read_text().replace(old, new, 1))
    res = run_cli("plan", str(cfg))
    assert res.returncode == 2, res.stdout + res.stderr
    import re

    assert re.search(pattern, res.stderr, re.S), res.stderr
    assert standin_calls(tmp_path / "standin.log") == []


def test_script_symlink_escape_rejected(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    tree = tmp_path / "tree"
    (tree / "examples" / "evil").mkdir(parents=True)
    (tmp_path / "outside.py").write_text("print('pwned')\n")
    (tree / "examples" / "evil" / "convert.py").symlink_to(tmp_path / "outside.py")
    cfg = project_config(tmp_path, tiny_model("llama"), "evil")
    cfg.write_text(cfg.read_text().replace("convert_checkpoint.py", "convert.py"))
    res = run_cli("plan", str(cfg), "--trtllm-dir", str(tree))
    assert res.returncode == 2
    assert "resolves to" in res.stderr and "outside the TensorRT-LLM examples tree" in res.stderr


def test_missing_tree_is_a_setup_error(run_cli: CliRun, tmp_path: Path) -> None:
    res = run_cli("plan", str(SEED), env={"TRTLLM_DIR": str(tmp_path / "nope")})
    assert res.returncode == 2  # plan: valid (0) or not (2)
    assert "no TensorRT-LLM examples tree" in res.stderr and "TRTLLM_DIR" in res.stderr
    res = run_cli("build", str(SEED), env={"TRTLLM_DIR": str(tmp_path / "nope")})
    assert res.returncode == 3
    assert "no TensorRT-LLM examples tree" in res.stderr and "TRTLLM_DIR" in res.stderr


# --- build --------------------------------------------------------------------------------------


@pytest.mark.parametrize("standin_release", [OLD_RELEASE])
def test_build_seed_config_on_the_old_tree(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    model = tiny_model("gpt2")
    out = tmp_path / "engine.tar.gz"
    res = run_cli("build", str(SEED), "--model-dir", str(model), "--output", str(out))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out)
    manifest = unpack(out, tmp_path / "x")
    names = {f["path"] for f in manifest["files"]}
    assert {"config.json", "gpt_float16_tp1_rank0.engine", "tokenizer.json", "vocab.json", "merges.txt"} <= names
    assert manifest["engine"]["layout"] == "legacy_engine"
    assert [s["name"] for s in manifest["steps"]] == ["convert_to_ft", "build"]
    assert all(s["exit_code"] == 0 and s["duration_s"] >= 0 for s in manifest["steps"])
    assert manifest["model"] == {"id": "sshleifer/tiny-gpt2", "source": "local", "revision": None}
    assert manifest["trtllm"]["version"] == OLD_RELEASE
    # the sub-folder the old converter wrote into was found and its output verified
    assert "[convert_to_ft] verified legacy checkpoint" in res.stderr


@pytest.mark.parametrize(("arch", "example"), [("gpt2", "gpt"), ("llama", "llama")])
def test_build_tp2(arch: str, example: str, run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    cfg = project_config(tmp_path, tiny_model(arch), example, tp=2)
    out = tmp_path / "engine.tar.gz"
    res = run_cli("build", str(cfg), "--output", str(out), "--work-dir", str(tmp_path / "w"))
    assert res.returncode == 0, res.stderr
    manifest = unpack(out, tmp_path / "x")
    names = [f["path"] for f in manifest["files"]]
    assert names[:3] == ["config.json", "rank0.engine", "rank1.engine"]
    assert "tokenizer.json" in names and "tokenizer_config.json" in names
    engine_cfg = json.loads((tmp_path / "x" / "config.json").read_text())
    assert engine_cfg["pretrained_config"]["mapping"]["world_size"] == 2
    assert manifest["engine"]["world_size"] == 2 and manifest["engine"]["tp_size"] == 2
    assert manifest["gpus"] and manifest["gpus"][0]["compute_capability"]
    assert not (tmp_path / "w").exists()  # the work dir is removed after success
    # logs: banner, the command, every line of output prefixed with the step name, the duration
    assert "==> [1/2] convert:" in res.stderr and "[build] " in res.stderr and "<== build finished in" in res.stderr


def test_failing_step_message(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    res = run_cli("build", str(cfg), "--work-dir", str(tmp_path / "w"), env={"STANDIN_FAIL": "trtllm-build:7"})
    assert res.returncode == 1
    err = res.stderr.split("error: ", 1)[1]
    assert err.startswith("step `build` exited with code 7")
    assert "command: " in err and "trtllm-build --checkpoint_dir" in err
    assert "last " in err and "lines of output" in err
    assert (tmp_path / "w").exists()  # kept for inspection after a failure
    assert "is kept for inspection" in res.stderr


def test_subfolder_discovery(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    cfg = project_config(tmp_path, tiny_model("llama"), "llama", tp=2)
    out = tmp_path / "e.tar.gz"
    res = run_cli("build", str(cfg), "-o", str(out), env={"STANDIN_SUBDIR": "convert_checkpoint.py"})
    assert res.returncode == 0, res.stderr
    assert "output found in sub-folder 2-gpu/" in res.stderr
    # trtllm-build was pointed at the sub-folder, not at the declared dir
    build = next(c for c in standin_calls(tmp_path / "standin.log") if c["script"] == "trtllm-build")
    ckpt = build["argv"][build["argv"].index("--checkpoint_dir") + 1]
    assert ckpt.endswith("steps/convert/2-gpu")
    unpack(out, tmp_path / "x")


def test_step_exits_0_but_writes_nothing(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    res = run_cli("build", str(cfg), env={"STANDIN_EMPTY": "convert_checkpoint.py"})
    assert res.returncode == 1
    assert "error: step `convert` exited 0 but produced no TensorRT-LLM checkpoint in " in res.stderr
    assert "expected config.json + rank<N>.safetensors" in res.stderr and "is empty" in res.stderr
    assert not any(c["script"] == "trtllm-build" for c in standin_calls(tmp_path / "standin.log"))


def test_timeout(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    cfg.write_text(
        cfg.read_text().replace("    command: trtllm-build\n", "    command: trtllm-build\n    timeout: 2\n")
    )
    start = time.monotonic()
    res = run_cli("build", str(cfg), env={"STANDIN_HANG": "trtllm-build", "STANDIN_PIDFILE": str(tmp_path / "pids")})
    assert res.returncode == 1
    assert "step `build` timed out after 2 s and was stopped" in res.stderr
    assert time.monotonic() - start < 30
    assert_processes_gone(tmp_path / "pids")


def test_ctrl_c_stops_the_step_tree(
    standin_env: dict[str, str], tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    proc, pidfile = start_hanging_build(standin_env, cfg, tmp_path, stderr=subprocess.PIPE)
    time.sleep(0.3)
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err
    assert time.monotonic() - start < 15
    assert_processes_gone(pidfile)


def test_token_never_in_argv_logs_or_archive(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    token = "hf_TOPSECRETTOKEN1234567890"
    cfg = project_config(tmp_path, tiny_model("llama"), "llama")
    cfg.write_text(cfg.read_text() + f"hf_token: {token}\n")
    out = tmp_path / "e.tar.gz"
    res = run_cli("build", str(cfg), "-o", str(out))
    assert res.returncode == 0, res.stderr
    calls = standin_calls(tmp_path / "standin.log")
    steps = [c for c in calls if c["script"] in {"convert_checkpoint.py", "trtllm-build"}]
    assert len(steps) == 2 and all(c["env_hf_token"] for c in steps)  # reached the steps through the environment
    assert token not in json.dumps(calls)  # never through argv
    assert token not in res.stdout + res.stderr
    raw = subprocess.run(["tar", "-xzOf", str(out)], capture_output=True, check=True).stdout
    assert token.encode() not in raw
    with tarfile.open(out) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest["config"]["hf_token"] == "**********"


def test_foreign_work_dir_is_refused(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    work = tmp_path / "mine"
    work.mkdir()
    (work / "precious.txt").write_text("keep me")
    res = run_cli("build", str(project_config(tmp_path, tiny_model("llama"), "llama")), "--work-dir", str(work))
    assert res.returncode == 2 and "was not created by trtllm-builder" in res.stderr
    assert (work / "precious.txt").read_text() == "keep me"
