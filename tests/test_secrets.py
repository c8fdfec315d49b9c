"""secrets.py: every form of a secret, URLs, the environment, tokens; and the sinks that use it."""

from __future__ import annotations

import json
import re
from urllib.parse import quote, quote_plus

import pytest

from trtllm_builder.config.schema import load_config, redact_config
from trtllm_builder.config.yamlsafe import load_yaml
from trtllm_builder.errors import ConfigError, FetchError, StepFailed
from trtllm_builder.plan.argv import display
from trtllm_builder.secrets import (
    MASK,
    clean_token,
    collect,
    env_secrets,
    forms,
    hf_token,
    mask,
    mask_url,
    scrub,
    secrets_in_text,
    step_environment,
    url_secrets,
)

TOKEN = "hf_SecretTokenValue0123456789abcdef"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"  # '/' and '+' change when URL-encoded
SIGNED = (
    "https://models.s3.amazonaws.com/llama.tar.gz?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20250101%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20250101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=6f1e2c0b8f3f4d5e6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f"
)
SIGNATURE = "6f1e2c0b8f3f4d5e6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f"


# --- forms and mask ----------------------------------------------------------------------------------


def test_every_form_of_a_secret_is_masked() -> None:
    raw = f" {AWS_SECRET}\n"  # as an environment variable may hold it
    texts = [
        AWS_SECRET,
        quote(AWS_SECRET, safe=""),
        re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(AWS_SECRET, safe="")),  # lower-case hex
        quote_plus(AWS_SECRET),
        json.dumps({"k": AWS_SECRET}),
        f"curl -H 'x-key: {AWS_SECRET}'",
    ]
    for text in texts:
        out = mask(f"before {text} after", [raw])
        assert "wJalrXUtnFEMI" not in out, out
        assert MASK in out and out.startswith("before ") and out.endswith(" after")


def test_mask_longest_first_and_short_values_ignored() -> None:
    assert mask("token=abcdefgh123", ["abcdefgh", "abcdefgh123"]) == f"token={MASK}"
    # masking `true` or `1` would garble every line: values that short are not credentials
    assert mask("enabled: true, level 1", ["true", "1", ""]) == "enabled: true, level 1"
    assert all(len(f) >= 6 for f in forms("  abcdef  "))


def test_a_secret_with_line_breaks_is_masked_piece_by_piece() -> None:
    secret = "firstPIECE-aaaa\nsecondPIECE-bbbb"
    out = mask("line firstPIECE-aaaa\nline secondPIECE-bbbb", [secret])
    assert "PIECE" not in out


def test_collect_holds_every_form_for_the_runner() -> None:
    got = collect([f"{TOKEN}\r\n", None, ""], urls=[SIGNED], env={"AWS_SECRET_ACCESS_KEY": AWS_SECRET, "PATH": "/bin"})
    assert TOKEN in got and f"{TOKEN}\r\n" in got
    assert AWS_SECRET in got and quote(AWS_SECRET, safe="") in got
    assert SIGNATURE in got
    assert "/bin" not in got
    assert got == sorted(got, key=lambda s: (-len(s), s))


# --- URLs --------------------------------------------------------------------------------------------


def test_signed_url_is_shown_with_its_query_masked() -> None:
    shown = mask_url(SIGNED)
    assert shown == f"https://models.s3.amazonaws.com/llama.tar.gz?{MASK}"
    assert mask_url("https://user:pa55word@host:8443/c.yaml#frag") == f"https://host:8443/c.yaml#{MASK}"
    assert mask_url("http://127.0.0.1:9/x.yaml") == "http://127.0.0.1:9/x.yaml"
    assert mask_url("/local/config.yaml") == "/local/config.yaml"
    assert mask_url("http://[::1:9/x?sig=abc") == f"http://{MASK}"  # unparsable: nothing of it


def test_url_secrets_cover_what_a_requests_error_quotes() -> None:
    # requests: "Max retries exceeded with url: /llama.tar.gz?X-Amz-...": path and raw query
    error = f"HTTPSConnectionPool(host='models.s3.amazonaws.com', port=443): Max retries exceeded with url: /llama.tar.gz?{SIGNED.split('?', 1)[1]}"
    out = mask(error, url_secrets(SIGNED))
    assert SIGNATURE not in out and "AKIAIOSFODNN7EXAMPLE" not in out and "/llama.tar.gz?" in out
    assert set(url_secrets("https://key:pass%2Fword@h/x")) >= {"pass%2Fword", "pass/word", "key"}


# --- the environment ---------------------------------------------------------------------------------

ENV = {
    "PATH": "/usr/bin",
    "HOME": "/root",
    "CUDA_VISIBLE_DEVICES": "0,1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HOME": "/cache/hf",
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEBQaDSESSIONTOKEN",
    "AWS_SHARED_CREDENTIALS_FILE": "/root/.aws/credentials",
    "HF_TOKEN": "hf_fromTheEnvironment12345",
    "HUGGING_FACE_HUB_TOKEN": "hf_legacyVariable123456",
    "GITHUB_TOKEN": "ghp_abcdefghijklmnop",
    "OPENAI_API_KEY": "sk-abcdefghijklmnop",
    "DB_PASSWORD": "hunter2hunter2",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "PIP_INDEX_URL": "https://me:pipPassw0rd@pypi.example/simple",
}


def test_steps_get_no_credential_but_their_hf_token() -> None:
    env = step_environment(ENV, hf_token="hf_theOneForThisBuild")
    assert env["HF_TOKEN"] == "hf_theOneForThisBuild"
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SHARED_CREDENTIALS_FILE",
        "HUGGING_FACE_HUB_TOKEN",
        "GITHUB_TOKEN",
        "OPENAI_API_KEY",
        "DB_PASSWORD",
    ):
        assert name not in env, name
    for name in ("PATH", "HOME", "CUDA_VISIBLE_DEVICES", "TOKENIZERS_PARALLELISM", "HF_HOME", "AWS_REGION"):
        assert env[name] == ENV[name]
    assert "HF_TOKEN" not in step_environment(ENV, hf_token=None)


def test_environment_credentials_are_masked() -> None:
    hidden = env_secrets(ENV)
    text = " ".join(ENV.values())
    out = mask(text, hidden)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN", "GITHUB_TOKEN"):
        assert ENV[name] not in out, name
    assert "pipPassw0rd" not in out
    assert "/usr/bin" in out and "/root/.aws/credentials" in out  # paths are not secrets
    assert " 1 " in f" {out} "  # HF_HUB_DISABLE_IMPLICIT_TOKEN=1 is not masked


# --- tokens ------------------------------------------------------------------------------------------


def test_tokens_are_stripped_from_every_source_alike() -> None:
    assert hf_token(f"  {TOKEN}\n", None, env={}) == TOKEN
    assert hf_token(None, f"{TOKEN}\r\n", env={}) == TOKEN
    assert hf_token(None, None, env={"HF_TOKEN": f"{TOKEN}\n"}) == TOKEN
    # precedence: the input, then the config, then HF_TOKEN; blank ones do not count
    assert hf_token("hf_input12345", "hf_config12345", env={"HF_TOKEN": "hf_env12345"}) == "hf_input12345"
    assert hf_token(" \n", "hf_config12345", env={"HF_TOKEN": "hf_env12345"}) == "hf_config12345"
    assert hf_token(None, "   ", env={"HF_TOKEN": "hf_env12345"}) == "hf_env12345"
    assert hf_token(None, None, env={"HF_TOKEN": "\n"}) is None


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("hf_abc def1234567", r"a space at character 7 of 17"),
        ("hf_abc\ndef1234567", r"a line break at character 7"),
        ("hf_abc\tdef1234567", r"a tab at character 7"),
        ("hf_abc\x07def1234567", r"a control character \(U\+0007\) at character 7"),
        ("hf_abcdéf1234567", r"a non-ASCII character \(U\+00E9\) at character 8"),
        ("hf_abc\u00a0def1234567", r"a Unicode space \(U\+00A0\) at character 7"),
    ],
)
def test_malformed_tokens_are_refused_saying_what_is_wrong(token: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as info:
        clean_token(f"  {token}\n", what="the `hf_token` input")
    assert str(info.value).startswith("the `hf_token` input is malformed")
    assert "abc" not in str(info.value) and "1234567" not in str(info.value)
    with pytest.raises(ConfigError, match=r"HF_TOKEN \(environment\) is malformed"):
        hf_token(None, None, env={"HF_TOKEN": token})


# --- sinks -------------------------------------------------------------------------------------------


def test_display_masks_each_argv_element_before_quoting() -> None:
    line = display(["python", "x.py", "--t", f"a b {TOKEN}", f"--u={TOKEN}"], [f"{TOKEN}\n"])
    assert TOKEN not in line
    assert line == f"python x.py --t 'a b {MASK}' --u={MASK}"


def test_scrub_keeps_the_type_and_cuts_a_chain_that_holds_the_secret() -> None:
    try:
        try:
            raise OSError(f"connection to /x?sig={SIGNATURE} failed")
        except OSError as inner:
            raise StepFailed("build", f"trtllm-build --t {TOKEN}", 1, [f"printed {TOKEN}"]) from inner
    except StepFailed as exc:
        err = scrub(exc, collect([TOKEN], urls=[SIGNED]))
    assert isinstance(err, StepFailed) and err.returncode == 1
    assert TOKEN not in str(err) and f"--t {MASK}" in str(err)
    assert err.__cause__ is None and err.__suppress_context__
    clean = scrub(FetchError("nothing secret"), [TOKEN])
    assert str(clean) == "nothing secret"


def test_yaml_syntax_errors_never_quote_the_line() -> None:
    """PyYAML's message ends with a snippet of the line it failed on; that line may be the token's."""
    for text, where in [
        (f"model_id: x\nhf_token: {TOKEN}: oops\n", "line 2, column"),
        (f"model_id: x\nhf_token: '{TOKEN}\n", "line 2, column 11"),
        (f"hf_token: !{TOKEN} x\n", "line 1, column 11"),
        (f"{{hf_token: {TOKEN}, model_id: x\n", "line 1, column 1"),
        (f"model_id: x\nhf_token: {TOKEN}\nhf_token: {TOKEN}\n", "line 3"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_yaml(text, source="build.yaml")
        assert TOKEN not in str(info.value), str(info.value)
        assert "SecretToken" not in str(info.value)
        assert where in str(info.value)


def test_secrets_in_text_finds_what_a_config_error_could_quote() -> None:
    text = (
        f"hf_token: {TOKEN}  # mine\n"
        "model: {id: x, tar_url: '" + SIGNED + "'}\n"
        "  - {name: a, args: {access_token: 'tok-with-quote-1234'}}\n"
        "tokenizer_dir: /models/tokenizer\n"
        "max_num_tokens: 8192\n"
    )
    found = secrets_in_text(text)
    assert TOKEN in found and SIGNATURE in found and "tok-with-quote-1234" in found
    assert "/models/tokenizer" not in found and "8192" not in found


def test_config_errors_and_the_manifest_copy_hold_no_secret() -> None:
    cfg = load_config(
        f"model_id: x\nexample_name: gpt\nhf_token: {TOKEN}\nmodel_tar_url: '{SIGNED}'\n"
        "build: {script: build.py, args: {token: hf_passedAsAnArg1234}}\n"
    )
    raw = json.dumps(cfg.raw)
    assert TOKEN not in raw and SIGNATURE not in raw and "AKIAIOSFODNN7EXAMPLE" not in raw
    assert "hf_passedAsAnArg1234" not in raw
    assert cfg.raw["model_tar_url"] == f"https://models.s3.amazonaws.com/llama.tar.gz?{MASK}"
    assert redact_config({"model": {"id": "https://h/m?sig=abcdefghij"}}) == {"model": {"id": f"https://h/m?{MASK}"}}
    assert redact_config({"model": {"id": "someone/hf_tinyllama2"}}) == {"model": {"id": "someone/hf_tinyllama2"}}
