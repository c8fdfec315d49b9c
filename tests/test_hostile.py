"""A catalogue of hostile and malformed configs.

Each case asserts its own specific error, that nothing ran (no step, no download), and that
nothing outside the tool's own directories changed. The CLI runs in-process (``cli.main``) for
speed; the stand-ins are the world it runs in, exactly as in the subprocess tests.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trtllm_builder import cli

GOOD = """\
model:
  id: {model}
trtllm:
  example: llama
steps:
  - name: convert
    script: convert_checkpoint.py
    args: {{dtype: float16}}
  - name: build
    command: trtllm-build
    args: {{max_batch_size: 4}}
"""

SEED = """\
model_id: sshleifer/tiny-gpt2
example_name: gpt
convert_to_ft:
  script: hf_gpt_convert.py
  output_dir: ./c-model/gpt2/1-gpu
  args: {{in-file: /src/models/sshleifer/tiny-gpt2, out-dir: ./c-model/gpt2}}
build:
  script: build.py
  output_dir: ./engine_outputs/
  args: {{model_dir: ./c-model/gpt2/1-gpu, output_dir: ./engine_outputs/}}
"""

SIG = "sigSECRETsigSECRET0123456789abcdef"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


def sub(old: str, new: str, base: str = GOOD) -> Callable[[str], str]:
    def make(model: str) -> str:
        text = base.format(model=model)
        assert old in text, old
        return text.replace(old, new, 1)

    return make


def raw(text: str | bytes) -> Callable[[str], str | bytes]:
    return lambda model: text


# name -> (config maker, expected exit code, regex the message must contain)
CASES: dict[str, tuple[Callable[[str], str | bytes], int, str]] = {
    # --- YAML itself
    "yaml alias bomb": (raw(BOMB), 2, r"YAML aliases are not supported"),
    "oversized file": (
        raw("a: " + "x" * (2 << 20) + "\n"),
        2,
        r"is larger than 1 MiB; a pipeline config is a small YAML file",
    ),
    "binary file": (raw(b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 64), 2, r"is binary, not YAML text"),
    "non-utf8": (raw(b"model_id: caf\xe9\n"), 2, r"not UTF-8 text"),
    "python tag": (raw("model_id: !!python/object/apply:os.system ['touch /tmp/pwned']\n"), 2, r"is not valid YAML"),
    "duplicate key": (raw("model_id: a\nmodel_id: b\nexample_name: gpt\n"), 2, r"key `model_id` appears twice"),
    "deep nesting": (raw("a: " + "[" * 100 + "]" * 100 + "\n"), 2, r"nests deeper than 32 levels|nests too deeply"),
    "top-level list": (raw("- model_id: x\n"), 2, r"top level must be a mapping"),
    "empty file": (raw(""), 2, r"got empty"),
    # --- schema
    "unknown top-level key": (sub("trtllm:", "trtlm:"), 2, r"trtlm: unknown key; did you mean `trtllm`"),
    "misspelt legacy step": (sub("build:", "biuld:", SEED), 2, r"biuld: unknown key; did you mean `build`"),
    "wrong type": (sub("  id: ", "  id: [1]  #"), 2, r"model.id: Input should be a valid string"),
    "steps not a list": (sub("steps:\n", "steps: {}\nx:\n"), 2, r"steps: Input should be a valid list"),
    "step without name": (
        sub("  - name: convert\n    script", "  - script"),
        2,
        r"steps\[0\].name: required key is missing",
    ),
    "duplicate step names": (sub("name: build", "name: convert"), 2, r"step name `convert` is used twice"),
    "script and command": (
        sub("    command: trtllm-build", "    command: trtllm-build\n    script: run.py"),
        2,
        r"exactly one of `script`",
    ),
    "command not allowed": (sub("command: trtllm-build", "command: bash"), 2, r"`bash` is not allowed"),
    "command with a path": (sub("command: trtllm-build", "command: /bin/sh"), 2, r"`/bin/sh` is not allowed"),
    "absurd timeout": (
        sub("    command: trtllm-build", "    command: trtllm-build\n    timeout: 1e12"),
        2,
        r"timeout: Input should be less than or equal to 604800",
    ),
    "absurd number": (
        sub("max_batch_size: 4", "max_batch_size: 100000000000000000000000000000"),
        2,
        r"does not fit in 64 bits",
    ),
    "nan arg": (sub("max_batch_size: 4", "max_batch_size: .nan"), 2, r"NaN is not a valid value"),
    "mapping arg": (sub("max_batch_size: 4", "max_batch_size: {a: 1}"), 2, r"a mapping is not an arg value"),
    "dashed arg key": (
        sub("max_batch_size: 4", "--max_batch_size: 4"),
        2,
        r"write `max_batch_size`, not `--max_batch_size`",
    ),
    "shell chars in arg key": (sub("max_batch_size: 4", "'a;rm -rf /': 4"), 2, r"is not a flag name"),
    "nul in arg value": (sub("dtype: float16", 'dtype: "float16\\0; rm -rf /"'), 2, r"contains a NUL byte"),
    "too many steps": (
        lambda m: GOOD.format(model=m) + "".join(f"  - {{name: s{i}, command: trtllm-build}}\n" for i in range(40)),
        2,
        r"the limit is 32",
    ),
    "huge arg value": (sub("dtype: float16", "dtype: " + "x" * 5000), 2, r"5000 characters; the limit is 4096"),
    "absurd smoke test": (
        lambda m: GOOD.format(model=m) + "smoke_test: {prompt: hi, max_output_len: 1000000000}\n",
        2,
        r"max_output_len: Input should be less than or equal to 4096",
    ),
    "archive name with a path": (
        lambda m: GOOD.format(model=m) + "output: {name: ../../evil.tar.gz}\n",
        2,
        r"output.name: String should match pattern",
    ),
    "upload not s3": (lambda m: GOOD.format(model=m) + "output: {upload: 'http://example.invalid/x'}\n", 2, r"s3://"),
    # --- paths
    "script dotdot": (sub("script: convert_checkpoint.py", "script: ../../../../bin/sh"), 2, r"no `\.\.`"),
    "script absolute": (sub("script: convert_checkpoint.py", "script: /bin/sh"), 2, r"no absolute paths"),
    "example dotdot": (sub("example: llama", "example: .."), 2, r"must be an example directory name"),
    "example with slash": (sub("example: llama", "example: models/../../x"), 2, r"must be an example directory name"),
    "output_dir absolute": (
        sub("    command: trtllm-build", "    command: trtllm-build\n    output_dir: /etc"),
        2,
        r"`/etc` is outside the work dir",
    ),
    "output_dir dotdot": (
        sub("    command: trtllm-build", "    command: trtllm-build\n    output_dir: ../../x"),
        2,
        r"`../../x` is outside the work dir",
    ),
    "arg absolute outside": (
        sub("max_batch_size: 4", "max_batch_size: 4, input_timing_cache: /etc/passwd"),
        2,
        r"absolute path `/etc/passwd` is outside",
    ),
    "arg dotdot": (
        sub("max_batch_size: 4", "max_batch_size: 4, input_timing_cache: ../../../etc/passwd"),
        2,
        r"escapes the work dir",
    ),
    "arg home path": (
        sub("max_batch_size: 4", "max_batch_size: 4, input_timing_cache: ~/.ssh/id_rsa"),
        2,
        r"home-relative paths are not allowed",
    ),
    "unknown placeholder": (
        sub("max_batch_size: 4", "max_batch_size: 4, input_timing_cache: '{home}/x'"),
        2,
        r"unknown placeholder `\{home\}`",
    ),
    "legacy other model path": (
        sub("in-file: /src/models/sshleifer/tiny-gpt2", "in-file: /src/models/someone/else", SEED),
        2,
        r"not at this config's model",
    ),
    "model id traversal": (
        lambda m: GOOD.format(model="../../../../../../../../etc"),
        2,
        r"local model directory /etc has no config.json",
    ),
    "model id missing dir": (
        lambda m: GOOD.format(model="./no/such/model"),
        2,
        r"local model directory .*no/such/model does not exist",
    ),
    "secret in a bad config": (
        lambda m: GOOD.format(model=m) + "hf_token: hf_SECRETSECRETSECRET123\nextra_key: 1\n",
        2,
        r"extra_key: unknown key",
    ),
    # --- secrets in configs that fail (issue #14, items 8 and 12): never echoed
    "yaml error on the token line": (
        raw("model_id: x\nexample_name: gpt\nhf_token: hf_SECRETSECRETSECRET123: oops\n"),
        2,
        r"is not valid YAML: line 3, column \d+: mapping values are not allowed here",
    ),
    "unterminated quote on the token line": (
        raw("model_id: x\nexample_name: gpt\nhf_token: 'hf_SECRETSECRETSECRET123\n"),
        2,
        r"is not valid YAML: line 3, column 11: while scanning a quoted scalar",
    ),
    "token as a tag": (raw("hf_token: !hf_SECRETSECRETSECRET123 x\n"), 2, r"could not determine a constructor"),
    "token of the wrong type": (
        lambda m: GOOD.format(model=m) + "hf_token: 123456789012345\n",
        2,
        r"hf_token: Input should be a valid string \(got \*+\)",
    ),
    "token with a space inside": (
        lambda m: GOOD.format(model=m) + 'hf_token: "hf_SECRET SECRETSECRET123"\n',
        2,
        r"the config's `hf_token` is malformed: it has a space at character 10 of 25",
    ),
    "token with a line break inside": (
        lambda m: GOOD.format(model=m) + 'hf_token: "hf_SECRET\\nSECRETSECRET123"\n',
        2,
        r"the config's `hf_token` is malformed: it has a line break at character 10",
    ),
    "signed tar url that is not http": (
        lambda m: (
            f"model:\n  id: x\n  tar_url: 'ftp://h/m.tar?X-Amz-Signature={SIG}'\n"
            + GOOD.format(model=m).split("\n", 2)[2]
        ),
        2,
        r"`model_tar_url` must be an http\(s\) URL, got `ftp://h/m.tar\?\*{10}`",
    ),
    "signed tar url with a revision": (
        lambda m: (
            f"model:\n  id: x\n  revision: main\n  tar_url: 'https://h/m.tar?X-Amz-Signature={SIG}'\n"
            + GOOD.format(model=m).split("\n", 2)[2]
        ),
        2,
        r"`revision` applies to Hugging Face repos, not to `model_tar_url`",
    ),
}


@pytest.fixture
def world(standin_env: dict[str, str], tmp_path: Path, tiny_model: Callable[..., Path]) -> dict[str, Path]:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("do not touch")
    return {"model": tiny_model("llama"), "victim": victim}


def snapshot(root: Path, skip: set[Path]) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(dirpath, d) not in skip]
        for name in files:
            p = Path(dirpath, name)
            st = p.lstat()
            out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def run_case(text: str | bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    cfg = tmp_path / "hostile.yaml"
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    code = cli.main(["build", str(cfg), "-o", str(tmp_path / "out" / "engine.tar.gz"), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_config(case: str, world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make, code, pattern = CASES[case]
    owned = {tmp_path / "tmp", tmp_path / "cache"}
    before = snapshot(tmp_path, owned)
    got, out = run_case(make(str(world["model"])), tmp_path, capsys)
    import re

    assert got == code, out
    assert re.search(pattern, out), out
    calls = (tmp_path / "standin.log").read_text().splitlines() if (tmp_path / "standin.log").exists() else []
    steps = [
        json.loads(c) for c in calls if json.loads(c)["argv"] != ["--help"] and json.loads(c)["script"] != "nvidia-smi"
    ]
    assert steps == [], "a step ran"
    after = snapshot(tmp_path, owned)
    after = {k: v for k, v in after.items() if not k.endswith(("hostile.yaml", "standin.log"))}
    before = {k: v for k, v in before.items() if not k.endswith(("hostile.yaml", "standin.log"))}
    assert after == before
    assert not (tmp_path / "out").exists()
    for secret in ("hf_SECRETSECRETSECRET123", "SECRET SECRETSECRET123", "123456789012345", SIG):
        assert secret not in out, out
    assert not Path("/tmp/pwned").exists()


def test_catalogue_size() -> None:
    assert len(CASES) >= 40


def test_symlink_escapes(world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A script link, and a path through a link, that lead out of the examples tree."""
    tree = tmp_path / "tree"
    ex = tree / "examples" / "llama"
    ex.mkdir(parents=True)
    (tmp_path / "outside.py").write_text("print('pwned')\n")
    (ex / "convert_checkpoint.py").symlink_to(tmp_path / "outside.py")
    code, out = run_case(GOOD.format(model=world["model"]), tmp_path, capsys, "--trtllm-dir", str(tree))
    assert code == 2 and "outside the TensorRT-LLM examples tree" in out
    (ex / "convert_checkpoint.py").unlink()
    (ex / "convert_checkpoint.py").write_text("print('fine')\n")
    (tree / "examples" / "etc").symlink_to("/etc")
    text = GOOD.format(model=world["model"]).replace(
        "dtype: float16", f"dtype: float16, calib_dataset: {tree}/examples/etc/passwd"
    )
    code, out = run_case(text, tmp_path, capsys, "--trtllm-dir", str(tree))
    assert code == 2 and "is outside the work dir" in out


class _Endless(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/missing"):
            self.send_error(404)
            return
        self.send_response(200)
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"a: " + b"x" * 65536 + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endless_server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Endless)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_config_url_never_ending(
    world: dict[str, Path], endless_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["build", f"{endless_server}/config.yaml", "-o", str(tmp_path / "e.tar.gz")])
    out = capsys.readouterr().err
    assert code == 2 and "is larger than 1 MiB" in out


def test_config_url_404(
    world: dict[str, Path], endless_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["build", f"{endless_server}/missing.yaml", "-o", str(tmp_path / "e.tar.gz")])
    out = capsys.readouterr().err
    assert code == 2 and "404" in out


def test_shell_metacharacters_stay_one_literal_argument(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evil = "$(touch /tmp/pwned-meta); `id` | tee x && echo $HOME > y; 'quoted' \"dq\" *"
    text = GOOD.format(model=world["model"]).replace(
        "dtype: float16", f"dtype: float16, calib_dataset: {json.dumps(evil)}"
    )
    cfg = tmp_path / "m.yaml"
    cfg.write_text(text)
    assert cli.main(["plan", str(cfg), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    argv = plan["steps"][0]["argv"]
    assert argv[argv.index("--calib_dataset") + 1] == evil
    assert not Path("/tmp/pwned-meta").exists()
