"""Secrets never reach logs, errors, argv, manifests or steps that do not need them (issue #14, items 8 and 12).

Real builds: the CLI as a subprocess and the Cog predictor in-process, against the stand-ins. A step
"prints a secret" through ``STANDIN_FAIL_MESSAGE`` (the stand-in prints it, then fails).
"""

from __future__ import annotations

import io
import json
import tarfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CliRun
from hubserver import HubServer
from test_predict import predict, run, write_config

from trtllm_builder.errors import BuilderError, ConfigError, FetchError
from trtllm_builder.fetch.sources import ModelRef, fetch_model

TOKEN = "hf_LeakTestTokenValue0123456789ab"
AWS_KEY_ID = "AKIALEAKTESTKEY12345"
AWS_SECRET = "leak/TEST+secretAccessKey0123456789abcd"
SIGNATURE = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
QUERY = (
    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIALEAKTESTKEY12345%2F20250101%2Fus-east-1%2Fs3"
    f"%2Faws4_request&X-Amz-Date=20250101T000000Z&X-Amz-Expires=3600&X-Amz-Signature={SIGNATURE}"
)


def project_config(path: Path, model: str, *, extra: str = "", example: str = "llama") -> Path:
    path.write_text(
        textwrap.dedent(
            f"""\
            model:
              id: {model}
            trtllm:
              example: {example}
            steps:
              - name: convert
                script: convert_checkpoint.py
                args: {{dtype: float16}}
              - name: build
                command: trtllm-build
                args: {{max_batch_size: 4}}
            """
        )
        + extra
    )
    return path


@pytest.fixture
def predictor(standin_env: dict[str, str]) -> Any:
    p = predict.Predictor()
    p.setup()
    p.record_metric = lambda key, value, mode="replace": None
    return p


def no_secret(text: str, *secrets: str) -> None:
    for s in secrets:
        assert s not in text, f"{s!r} leaked:\n{text}"


# --- 8(a), 12: a token with whitespace around it is used stripped, and masked stripped --------------


@pytest.mark.parametrize("source", ["HF_TOKEN", "config"])
def test_token_with_a_trailing_newline_is_masked_when_a_step_prints_it(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path], source: str
) -> None:
    extra = f'hf_token: "{TOKEN}\\n"\n' if source == "config" else ""
    cfg = project_config(tmp_path / "c.yaml", str(tiny_model("llama")), extra=extra)
    env = {"STANDIN_FAIL": "trtllm-build", "STANDIN_FAIL_MESSAGE": f"401 Unauthorized for token {TOKEN}"}
    if source == "HF_TOKEN":
        env["HF_TOKEN"] = f"  {TOKEN}\n"
    res = run_cli("build", str(cfg), "-o", str(tmp_path / "e.tar.gz"), env=env)
    assert res.returncode == 1, res.stderr
    no_secret(res.stdout + res.stderr, TOKEN)
    assert "401 Unauthorized for token **********" in res.stderr
    calls = [json.loads(line) for line in (tmp_path / "standin.log").read_text().splitlines()]
    assert any(c["script"] == "convert_checkpoint.py" and c["env_hf_token"] for c in calls)


def test_predictor_strips_the_input_token_and_masks_it_in_logs_and_error(
    predictor: Any, tmp_path: Path, tiny_model: Callable[..., Path], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cfg = write_config(tmp_path / "config.yaml", tiny_model("gpt2"))
    monkeypatch.setenv("STANDIN_FAIL", "trtllm-build")
    monkeypatch.setenv("STANDIN_FAIL_MESSAGE", f"bad token {TOKEN}")
    with pytest.raises(BuilderError) as info:
        run(predictor, cfg, token=f"{TOKEN}\r\n")
    no_secret(str(info.value), TOKEN)
    assert "bad token **********" in str(info.value)
    no_secret(capsys.readouterr().out, TOKEN)


@pytest.mark.parametrize(
    ("where", "token", "problem"),
    [
        ("config", "hf_abc def0123456789", "the config's `hf_token` is malformed: it has a space at character 7"),
        ("HF_TOKEN", "hf_abc\ndef0123456789", "HF_TOKEN (environment) is malformed: it has a line break"),
        ("HF_TOKEN", "hf_abcdéf0123456789", "HF_TOKEN (environment) is malformed: it has a non-ASCII character"),
    ],
)
def test_malformed_token_is_refused_before_any_request(
    run_cli: CliRun, tmp_path: Path, where: str, token: str, problem: str
) -> None:
    with HubServer() as hub:  # a Hub that would be asked first, if anything were asked
        extra = f"hf_token: {json.dumps(token)}\n" if where == "config" else ""
        cfg = project_config(tmp_path / "c.yaml", "meta-llama/Llama-3.1-8B", extra=extra)
        env = {"HF_ENDPOINT": hub.endpoint, **({"HF_TOKEN": token} if where == "HF_TOKEN" else {})}
        for command in ("plan", "build"):
            res = run_cli(command, str(cfg), env=env)
            assert res.returncode == 2, res.stderr
            assert problem in res.stderr
            no_secret(res.stdout + res.stderr, "def0123456789")
        assert hub.requests == []


def test_predictor_refuses_a_malformed_input_token(
    predictor: Any, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    cfg = write_config(tmp_path / "config.yaml", tiny_model("gpt2"))
    with pytest.raises(ConfigError, match=r"the `hf_token` input is malformed: it has a tab at character 4") as info:
        run(predictor, cfg, token="hf_\tabcdef0123456789")
    no_secret(str(info.value), "abcdef0123456789")


# --- 8(b): a YAML syntax error on the token's line -------------------------------------------------


BROKEN = f"model_id: sshleifer/tiny-gpt2\nexample_name: gpt\nhf_token: {TOKEN}: oops\n"


def test_yaml_error_on_the_token_line_does_not_echo_it_cli(run_cli: CliRun, tmp_path: Path) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text(BROKEN)
    for command in ("plan", "build"):
        res = run_cli(command, str(cfg))
        assert res.returncode == 2
        assert "is not valid YAML: line 3, column" in res.stderr
        no_secret(res.stdout + res.stderr, TOKEN, "LeakTestToken")


def test_yaml_error_on_the_token_line_does_not_echo_it_cog(predictor: Any, tmp_path: Path) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text(BROKEN)
    with pytest.raises(ConfigError) as info:  # Cog puts str(exception) in the reply's `error`
        run(predictor, cfg)
    assert "line 3" in str(info.value)
    no_secret(str(info.value), TOKEN, "LeakTestToken")


def test_a_wrong_type_for_the_token_is_not_quoted(run_cli: CliRun, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model_id: sshleifer/tiny-gpt2\nexample_name: gpt\nhf_token: 1234567890123\n")
    res = run_cli("plan", str(cfg))
    assert res.returncode == 2 and "hf_token: Input should be a valid string" in res.stderr
    no_secret(res.stderr, "1234567890123")


# --- 8(c): credentials of the environment ----------------------------------------------------------


DUMP_ENV = """\
import argparse, json, os
argparse.ArgumentParser().parse_args()
with open(os.path.join(os.environ["TMPDIR"], "step-env.json"), "w") as f:
    json.dump(dict(os.environ), f)
print("AWS key seen by a careless library:", os.environ.get("AWS_SECRET_ACCESS_KEY"))
"""


def test_steps_get_the_hf_token_and_no_other_credential(
    run_cli: CliRun, standin_env: dict[str, str], tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    """A real step (a script of its own examples tree) dumps the environment it was given."""
    tree = tmp_path / "tree"
    (tree / "examples" / "envdump").mkdir(parents=True)
    (tree / "examples" / "envdump" / "dump_env.py").write_text(DUMP_ENV)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"model: {{id: {tiny_model('llama')}}}\ntrtllm: {{example: envdump}}\n"
        "steps:\n  - {name: dump, script: dump_env.py, expect: none, args: {}}\n"
    )
    env = {
        "HF_TOKEN": f"{TOKEN}\n",
        "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_SESSION_TOKEN": "FwoGZXIvYXdzSESSIONleaktest",
        "HUGGING_FACE_HUB_TOKEN": "hf_legacyLeakTest123456",
        "GITHUB_TOKEN": "ghp_leaktest1234567890",
        "AWS_REGION": "us-east-1",
    }
    res = run_cli("build", str(cfg), "--trtllm-dir", str(tree), "-o", str(tmp_path / "e.tar.gz"), env=env)
    assert res.returncode == 1 and "no step produced an engine" in res.stderr, res.stderr  # after the step ran
    seen = json.loads((Path(standin_env["TMPDIR"]) / "step-env.json").read_text())
    assert seen["HF_TOKEN"] == TOKEN  # stripped
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "GITHUB_TOKEN",
    ):
        assert name not in seen, name
    assert seen["AWS_REGION"] == "us-east-1" and seen["PATH"] == standin_env["PATH"]
    no_secret(res.stdout + res.stderr, TOKEN, AWS_SECRET, AWS_KEY_ID)


def test_environment_credentials_are_masked_in_step_output(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    cfg = project_config(tmp_path / "c.yaml", str(tiny_model("llama")))
    env = {
        "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "STANDIN_FAIL": "convert_checkpoint.py",
        # as botocore would quote it: the key id raw, the secret URL-encoded
        "STANDIN_FAIL_MESSAGE": f"denied for {AWS_KEY_ID} signing with {AWS_SECRET.replace('/', '%2F').replace('+', '%2B')}",
    }
    res = run_cli("build", str(cfg), env=env)
    assert res.returncode == 1
    no_secret(res.stdout + res.stderr, AWS_KEY_ID, AWS_SECRET, "secretAccessKey0123456789abcd")
    assert "denied for ********** signing with **********" in res.stderr


# --- 8(e): signed URLs -------------------------------------------------------------------------------


def _model_tar(model: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(model, arcname="llama")
    return buf.getvalue()


@pytest.fixture
def files() -> Iterator[HubServer]:
    with HubServer() as server:
        yield server


def test_signed_tar_url_is_masked_in_manifest_logs_and_errors(
    run_cli: CliRun, files: HubServer, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    files.static["/llama.tar.gz"] = _model_tar(tiny_model("llama"))
    url = f"{files.endpoint}/llama.tar.gz?{QUERY}"
    cfg = project_config(tmp_path / "c.yaml", "my-llama")
    cfg.write_text(cfg.read_text().replace("  id: my-llama\n", f"  id: my-llama\n  tar_url: '{url}'\n"))
    out = tmp_path / "e.tar.gz"
    res = run_cli("build", str(cfg), "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert any(r.path.endswith(SIGNATURE) for r in files.requests)  # the real URL was used
    no_secret(res.stdout + res.stderr, SIGNATURE, AWS_KEY_ID, QUERY)
    with tarfile.open(out) as tf:
        manifest = tf.extractfile("manifest.json").read().decode()  # type: ignore[union-attr]
    no_secret(manifest, SIGNATURE, AWS_KEY_ID)
    assert json.loads(manifest)["config"]["model"]["tar_url"] == f"{files.endpoint}/llama.tar.gz?**********"
    res = run_cli("plan", str(cfg), "--json")
    assert res.returncode == 0
    no_secret(res.stdout + res.stderr, SIGNATURE, AWS_KEY_ID)


def test_signed_tar_url_is_masked_in_a_connection_error(tmp_path: Path) -> None:
    """requests quotes the path and query of the URL it failed on: both "a few words later"."""
    url = f"http://127.0.0.1:9/llama.tar.gz?{QUERY}"
    with pytest.raises(FetchError) as info:
        fetch_model(ModelRef("m", tar_url=url), token=None, cache_dir=tmp_path)
    assert "cannot download `model_tar_url` http://127.0.0.1:9/llama.tar.gz?**********" in str(info.value)
    no_secret(str(info.value), SIGNATURE, AWS_KEY_ID, "X-Amz-Credential")


def test_config_url_query_is_masked_in_config_errors(run_cli: CliRun, files: HubServer, tmp_path: Path) -> None:
    files.static["/bad.yaml"] = b"model: {id: x}\nunknown_key: 1\n"  # the project form refuses unknown keys
    res = run_cli("plan", f"{files.endpoint}/bad.yaml?{QUERY}")
    assert res.returncode == 2 and "unknown_key: unknown key" in res.stderr
    assert "/bad.yaml?********** is invalid" in res.stderr
    no_secret(res.stderr, SIGNATURE, AWS_KEY_ID)


def test_plan_json_masks_argv_as_the_text_plan_does(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    # a user who pastes the token into an arg: every sink shows it masked
    cfg = project_config(tmp_path / "c.yaml", str(tiny_model("llama")), extra=f"hf_token: {TOKEN}\n")
    cfg.write_text(cfg.read_text().replace("{dtype: float16}", f"{{dtype: float16, calib_dataset: {TOKEN}}}"))
    text = run_cli("plan", str(cfg))
    data = run_cli("plan", str(cfg), "--json")
    assert text.returncode == data.returncode == 0, text.stderr + data.stderr
    no_secret(text.stdout + data.stdout, TOKEN)
    argv = json.loads(data.stdout)["steps"][0]["argv"]
    assert argv[argv.index("--calib_dataset") + 1] == "**********"
    assert "--calib_dataset **********" in text.stdout
