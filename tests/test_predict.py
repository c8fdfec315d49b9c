"""The Cog predictor called directly (no server): setup checks, builds, failures, cancel, cleanup.

Every argument of ``run()`` is passed: a left-out one would arrive as Cog's ``FieldInfo`` default.
The real HTTP server is exercised in ``test_cog_server.py``.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cog import CancelationException, Secret
from cog import Path as CogPath
from conftest import DEFAULT_RELEASE

from trtllm_builder.errors import BuilderError, ConfigError, SetupError, StepFailed

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_directTESTtoken0123456789"


def _load_predict() -> ModuleType:
    spec = importlib.util.spec_from_file_location("predict", ROOT / "predict.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["predict"] = module
    spec.loader.exec_module(module)
    return module


predict = _load_predict()


def write_config(path: Path, model: Path, *, build_args: dict[str, Any] | None = None, extra: str = "") -> Path:
    args = {"max_batch_size": 1, "max_input_len": 32, "max_seq_len": 64, **(build_args or {})}
    lines = [
        "model:",
        f"  id: {model}",
        "trtllm:",
        "  example: gpt",
        "steps:",
        "  - name: convert",
        "    script: convert_checkpoint.py",
        "    args:",
        "      dtype: float16",
        "  - name: build",
        "    command: trtllm-build",
        "    args:",
        *(f"      {k}: {v}" for k, v in args.items()),
    ]
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


def predictions_root() -> Path:
    import tempfile

    return Path(tempfile.gettempdir()) / str(predict.PREDICTIONS_DIR_NAME)


def prediction_dirs() -> list[Path]:
    root = predictions_root()
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def steps_run(env: dict[str, str]) -> list[str]:
    """The TensorRT-LLM scripts that did work: not setup's ``nvidia-smi`` query, not ``--help`` (parser reads)."""
    log = Path(env["STANDIN_LOG"])
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    return [r["script"] for r in records if r["script"] != "nvidia-smi" and "--help" not in r["argv"]]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie counts as gone
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.fixture
def predictor(standin_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    p = predict.Predictor()
    p.setup()
    metrics: dict[str, float] = {}
    monkeypatch.setattr(p, "record_metric", lambda key, value, mode="replace": metrics.__setitem__(key, value))
    p.metrics = metrics
    return p


@pytest.fixture
def config(tmp_path: Path, tiny_model: Callable[..., Path]) -> Path:
    return write_config(tmp_path / "config.yaml", tiny_model("gpt2"))


def run(
    p: Any,
    config: Path,
    *,
    token: str | None = None,
    dry_run: bool = False,
    output_format: str = "config",
    upload_url: str | None = None,
    aws: tuple[str, str] | None = None,
    s3_endpoint_url: str | None = None,
) -> Path:
    out: Path = p.run(
        config=CogPath(config),
        hf_token=Secret(token) if token else None,
        dry_run=dry_run,
        output_format=output_format,
        upload_url=upload_url,
        aws_access_key_id=Secret(aws[0]) if aws else None,
        aws_secret_access_key=Secret(aws[1]) if aws else None,
        aws_session_token=None,
        s3_endpoint_url=s3_endpoint_url,
    )
    return out


# --- setup -------------------------------------------------------------------------------------------


def test_setup_reports_the_image(standin_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    predict.Predictor().setup()
    out = capsys.readouterr().out
    assert f"TensorRT-LLM {DEFAULT_RELEASE}" in out
    assert "trtllm-build" in out and str(Path(standin_env["TRTLLM_DIR"]).resolve()) in out
    assert "NVIDIA A100-SXM4-80GB" in out


def test_setup_fails_without_examples_tree(
    standin_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRTLLM_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(SetupError, match=r"no TensorRT-LLM examples tree at .*nowhere/examples \(from TRTLLM_DIR\)"):
        predict.Predictor().setup()


def test_setup_fails_without_trtllm_build(standin_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    with pytest.raises(SetupError, match=r"`trtllm-build` is not on PATH"):
        predict.Predictor().setup()


def test_setup_fails_when_tree_and_package_disagree(
    standin_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(predict, "trtllm_version", lambda _dir: "0.20.0")
    with pytest.raises(
        SetupError, match=rf"examples tree .* is version {re.escape(DEFAULT_RELEASE)} but tensorrt_llm 0\.20\.0"
    ):
        predict.Predictor().setup()


def test_setup_fails_when_no_version_is_readable(
    standin_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "trtllm"
    (tree / "examples").mkdir(parents=True)
    monkeypatch.setenv("TRTLLM_DIR", str(tree))
    with pytest.raises(SetupError, match=r"cannot tell which TensorRT-LLM this image has"):
        predict.Predictor().setup()


# --- builds ------------------------------------------------------------------------------------------


def test_build_returns_archive_with_engine_tokenizer_and_manifest(
    predictor: Any, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = run(predictor, config)
    assert isinstance(archive, CogPath) and archive.name == "engine.tar.gz"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        data = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert {"manifest.json", "config.json", "rank0.engine", "tokenizer.json", "vocab.json"} <= names
    manifest = json.loads(data["manifest.json"])
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == {
        n: hashlib.sha256(b).hexdigest() for n, b in data.items() if n != "manifest.json"
    }
    logs = capsys.readouterr().out
    for expected in ("==> [1/2] convert:", "[convert] ", "<== convert finished in", "==> [2/2] build:", "[build] "):
        assert expected in logs
    assert {"step_convert_seconds", "step_build_seconds", "archive_bytes"} <= set(predictor.metrics)
    assert predictor.metrics["archive_bytes"] == archive.stat().st_size
    # only the archive is left of this prediction: build() removed the work dir
    assert [p.name for p in archive.parent.parent.iterdir() if not p.name.startswith(".")] == ["out"]


def test_next_prediction_removes_the_previous_one(predictor: Any, config: Path) -> None:
    first = run(predictor, config)
    assert first.is_file()
    second = run(predictor, config, dry_run=True)
    assert not first.exists() and not first.parent.parent.exists()
    assert second.is_file()
    assert prediction_dirs() == [second.parent.parent]


def test_setup_sweeps_leftovers_but_not_live_predictions(standin_env: dict[str, str]) -> None:
    import fcntl

    root = predictions_root()
    stale = root / "p-stale"
    (stale / "work").mkdir(parents=True)
    live = root / "p-live"
    live.mkdir()
    with (live / ".prediction.lock").open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # another server's running prediction
        predict.Predictor().setup()
        assert not stale.exists()
        assert live.is_dir()


def test_failed_step_carries_name_code_and_tail_and_is_cleaned(
    predictor: Any, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_FAIL", "trtllm-build:3")
    with pytest.raises(StepFailed) as info:
        run(predictor, config)
    message = str(info.value)
    assert "step `build` exited with code 3" in message
    assert "simulated failure of trtllm-build (STANDIN_FAIL)" in message  # from the tail
    assert "command: " in message and "--checkpoint_dir" in message
    assert prediction_dirs() == []


def test_secret_never_leaves(
    predictor: Any, tmp_path: Path, tiny_model: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path / "config.yaml", tiny_model("gpt2"))
    archive = run(predictor, cfg, token=TOKEN)
    raw = archive.read_bytes()
    with tarfile.open(archive) as tar:
        contents = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())  # type: ignore[union-attr]
    assert TOKEN.encode() not in raw + contents
    assert TOKEN not in capsys.readouterr().out
    # a step that prints the token: its output and the error are redacted
    # (other build args than above: not a step-cache hit)
    cfg = write_config(tmp_path / "config2.yaml", tiny_model("gpt2"), build_args={"max_batch_size": 2})
    os.environ["STANDIN_FAIL"] = "trtllm-build"
    os.environ["STANDIN_FAIL_MESSAGE"] = f"401 for token {TOKEN}"
    try:
        with pytest.raises(BuilderError) as info:
            run(predictor, cfg, token=TOKEN)
    finally:
        del os.environ["STANDIN_FAIL"], os.environ["STANDIN_FAIL_MESSAGE"]
    assert TOKEN not in str(info.value) and "401 for token **********" in str(info.value)
    assert TOKEN not in capsys.readouterr().out


def test_invalid_config_fails_before_anything_runs(predictor: Any, tmp_path: Path, standin_env: dict[str, str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  id: /x\nstepz: []\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"stepz: unknown key; did you mean `steps`\?"):
        run(predictor, bad)
    assert steps_run(standin_env) == []
    assert prediction_dirs() == []


# --- dry run -----------------------------------------------------------------------------------------


def test_dry_run_returns_the_plan_and_builds_nothing(predictor: Any, config: Path, standin_env: dict[str, str]) -> None:
    out = run(predictor, config, dry_run=True)
    assert out.name == "plan.json"
    doc = json.loads(out.read_text())
    assert doc["dry_run"] is True
    assert [s["name"] for s in doc["plan"]["steps"]] == ["convert", "build"]
    assert doc["plan"]["steps"][1]["argv"][0].endswith("trtllm-build")
    assert doc["model"]["source"] == "local" and doc["model"]["size_bytes"] > 0
    assert steps_run(standin_env) == []
    assert not (out.parent.parent / "work").exists()


def test_dry_run_checks_the_model(predictor: Any, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "config.yaml", tmp_path / "no-such-model")
    with pytest.raises(ConfigError, match=r"local model directory .*no-such-model does not exist"):
        run(predictor, cfg, dry_run=True)


# --- cancel ------------------------------------------------------------------------------------------


def test_cancel_mid_step_stops_the_tree_and_cleans(
    predictor: Any, config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancel as coglet delivers it: ``CancelationException`` raised asynchronously in the run thread."""
    pidfile = tmp_path / "pids"
    monkeypatch.setenv("STANDIN_HANG", "trtllm-build")
    monkeypatch.setenv("STANDIN_PIDFILE", str(pidfile))
    caught: list[BaseException] = []

    def target() -> None:
        try:
            run(predictor, config)
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + 20
    while not (pidfile.is_file() and len(pidfile.read_text().split()) == 2):
        assert time.monotonic() < deadline and thread.is_alive(), "the build step never started"
        time.sleep(0.05)
    pids = [int(p) for p in pidfile.read_text().split()]
    assert thread.ident is not None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(CancelationException))
    start = time.monotonic()
    thread.join(timeout=15)
    assert not thread.is_alive()
    assert caught and isinstance(caught[0], CancelationException)
    assert time.monotonic() - start < 8
    assert not [p for p in pids if alive(p)]
    assert prediction_dirs() == []


# --- output format and upload ------------------------------------------------------------------------


def test_output_format_input_overrides_the_config(predictor: Any, config: Path, standin_env: dict[str, str]) -> None:
    out = run(predictor, config, output_format="triton")
    with tarfile.open(out) as tf:
        names = tf.getnames()
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert "tensorrt_llm/config.pbtxt" in names and "ensemble/config.pbtxt" in names
    assert manifest["output"]["format"] == "triton"


def test_upload_input_with_secret_credentials(
    predictor: Any, config: Path, standin_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    import boto3
    from test_upload import start_moto, stop

    proc, endpoint = start_moto()
    key_id, secret = "AKIAPREDICTTEST", "predict-secret-NEVER-logged"
    try:
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret, region_name="us-east-1"
        )
        s3.create_bucket(Bucket="engines")
        out = run(predictor, config, upload_url="s3://engines/p1", aws=(key_id, secret), s3_endpoint_url=endpoint)
        body = s3.get_object(Bucket="engines", Key="p1/engine.tar.gz")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(Path(out).read_bytes()).hexdigest()
        with pytest.raises(ConfigError, match="give both"):
            predictor.run(
                config=CogPath(config), hf_token=None, dry_run=False, output_format="config",
                upload_url="s3://engines/p2", aws_access_key_id=Secret(key_id), aws_secret_access_key=None,
                aws_session_token=None, s3_endpoint_url=endpoint,
            )  # fmt: skip
    finally:
        stop(proc)
    logs = capsys.readouterr()
    assert secret not in logs.out + logs.err
    with tarfile.open(out) as tf:
        assert secret.encode() not in b"".join(tf.extractfile(m).read() for m in tf.getmembers() if m.isfile())  # type: ignore[union-attr]


# --- small parts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("step_convert_seconds", "step_convert_seconds"),
        ("step_my-step.v2_seconds", "step_my_step_v2_seconds"),
        ("step__x__seconds", "step_x_seconds"),
        ("9lives", "m_9lives"),
    ],
)
def test_metric_key(name: str, key: str) -> None:
    assert predict.metric_key(name) == key


def test_committed_openapi_schema_matches_predict_py() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_openapi_schema.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_openapi_schema_describes_the_inputs() -> None:
    schema = json.loads((ROOT / ".cog" / "openapi_schema.json").read_text())
    inputs = schema["components"]["schemas"]["Input"]
    assert inputs["required"] == ["config"]
    props = inputs["properties"]
    assert list(props) == [
        "config",
        "hf_token",
        "dry_run",
        "output_format",
        "upload_url",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "s3_endpoint_url",
    ]
    for secret in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
        assert props[secret]["x-cog-secret"] is True
    ref = props["output_format"]["allOf"][0]["$ref"].rsplit("/", 1)[-1]
    assert schema["components"]["schemas"][ref]["enum"] == ["config", "engine", "triton"]
    assert props["config"]["format"] == "uri"
    assert props["hf_token"]["x-cog-secret"] is True and props["hf_token"]["nullable"] is True
    assert props["dry_run"] == {
        "x-order": 2,
        "title": "Dry Run",
        "type": "boolean",
        "default": False,
        "description": props["dry_run"]["description"],
    }
    assert all(p.get("description") for p in props.values())
    assert schema["components"]["schemas"]["Output"] == {"title": "Output", "type": "string", "format": "uri"}
