"""Config loading: both forms, and a clear error for each way a config can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from trtllm_builder.config.schema import load_config
from trtllm_builder.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

SEED = """\
model_id: sshleifer/tiny-gpt2
example_name: gpt
convert_to_ft:
  script: hf_gpt_convert.py
  output_dir: ./c-model/gpt2/1-gpu
  args:
    in-file: /src/models/sshleifer/tiny-gpt2
    out-dir: ./c-model/gpt2
    tensor-parallelism: 1
    storage-type: float16
build:
  script: build.py
  output_dir: ./engine_outputs/
  args:
    model_dir: ./c-model/gpt2/1-gpu
    output_dir: ./engine_outputs/
    # Keys without values are treated as flags
    use_gpt_attention_plugin:
    remove_input_padding:
"""

PROJECT = """\
model:
  id: meta-llama/Llama-3.1-8B-Instruct
  revision: main
trtllm:
  example: llama
steps:
  - name: convert
    script: convert_checkpoint.py
    args: {dtype: float16, tp_size: 2}
  - name: build
    command: trtllm-build
    args: {gemm_plugin: auto, max_batch_size: 8, max_seq_len: 4096}
output:
  format: engine
"""


def test_seed_config_accepted_as_written() -> None:
    cfg = load_config(SEED)
    assert cfg.form == "cog-trt-llm"
    assert cfg.model.id == "sshleifer/tiny-gpt2"
    assert cfg.example == "gpt"
    assert [s.name for s in cfg.steps] == ["convert_to_ft", "build"]
    assert cfg.steps[1].args["use_gpt_attention_plugin"] is None
    assert cfg.steps[0].output_dir == "./c-model/gpt2/1-gpu"


def test_project_config() -> None:
    cfg = load_config(PROJECT)
    assert cfg.form == "project"
    assert cfg.model.revision == "main"
    assert [(s.name, s.script, s.command) for s in cfg.steps] == [
        ("convert", "convert_checkpoint.py", None),
        ("build", None, "trtllm-build"),
    ]


def test_hf_token_is_secret_and_redacted_in_raw() -> None:
    cfg = load_config(SEED + "hf_token: hf_abcdefghijklmnop\n")
    assert cfg.hf_token == "hf_abcdefghijklmnop"
    assert cfg.raw["hf_token"] == "**********"
    assert "hf_abcdefghijklmnop" not in repr(cfg.raw)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("**/*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    load_config(path.read_text(), source=path.name)


BAD = {
    "misspelt legacy step": (SEED.replace("build:", "buidl:"), r"buidl: unknown key; did you mean `build`"),
    "misspelt project key": (
        PROJECT.replace("revision:", "revison:"),
        r"model.revison: unknown key; did you mean `revision`",
    ),
    "misspelt step key": (
        PROJECT.replace("    args: {dtype", "    arsg: {dtype"),
        r"arsg: unknown key; did you mean `args`",
    ),
    "duplicate step": (PROJECT.replace("name: build", "name: convert"), r"step name `convert` is used twice"),
    "script and command": (
        PROJECT.replace("    command: trtllm-build", "    command: trtllm-build\n    script: x.py"),
        r"exactly one of `script`",
    ),
    "neither script nor command": (PROJECT.replace("    command: trtllm-build\n", ""), r"exactly one of `script`"),
    "command not allowed": (
        PROJECT.replace("command: trtllm-build", "command: bash"),
        r"`bash` is not allowed; allowed: trtllm-build",
    ),
    "script escapes": (PROJECT.replace("script: convert_checkpoint.py", "script: ../../bin/evil.py"), r"no `\.\.`"),
    "absolute script": (PROJECT.replace("script: convert_checkpoint.py", "script: /bin/sh"), r"no absolute paths"),
    "mapping arg": (PROJECT.replace("tp_size: 2", "tp_size: {a: 1}"), r"args.tp_size: a mapping is not an arg value"),
    "dashed key": (PROJECT.replace("tp_size: 2", "--tp_size: 2"), r"write `tp_size`, not `--tp_size`"),
    "space in key": (PROJECT.replace("tp_size: 2", "'tp size': 2"), r"is not a flag name"),
    "nul in arg": (PROJECT.replace("dtype: float16", 'dtype: "float\\0"'), r"NUL byte"),
    "bad format": (
        PROJECT.replace("format: engine", "format: onnx"),
        r"output.format: Input should be 'engine' or 'triton'",
    ),
    "mixed forms": ("model_id: x\nexample_name: gpt\nsteps: []\n", r"mixes cog-trt-llm keys"),
    "not a mapping": ("- a\n- b\n", r"top level must be a mapping"),
    "empty": ("", r"top level must be a mapping of keys, got empty"),
    "yaml alias": ("a: &x [1, 2]\nb: *x\n", r"YAML aliases are not supported"),
    "duplicate key": ("model_id: a\nmodel_id: b\n", r"key `model_id` appears twice"),
    "bad yaml": ("model: [unclosed\n", r"is not valid YAML"),
    "python tag": ("model_id: !!python/object/apply:os.system ['echo hi']\n", r"is not valid YAML"),
    "no steps legacy": ("model_id: a/b\nexample_name: gpt\n", r"no steps"),
    "no example": (PROJECT.replace("trtllm:\n  example: llama\n", ""), r"no example: set `trtllm.example`"),
    "bad example name": (PROJECT.replace("example: llama", "example: ../llama"), r"must be an example directory name"),
    "missing model": (
        PROJECT.replace("model:\n  id: meta-llama/Llama-3.1-8B-Instruct\n  revision: main\n", ""),
        r"model: required key is missing",
    ),
    "wrong type": (
        PROJECT.replace("  id: meta-llama/Llama-3.1-8B-Instruct", "  id: [1]"),
        r"model.id: Input should be a valid string",
    ),
    "legacy bad executable": (
        SEED.replace("  script: build.py", "  script: build.py\n  executable: bash"),
        r"executable",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD), ids=str)
def test_bad_configs(case: str) -> None:
    text, pattern = BAD[case]
    with pytest.raises(ConfigError, match=pattern):
        load_config(text)


def test_every_problem_listed_at_once() -> None:
    text = PROJECT.replace("command: trtllm-build", "command: bash").replace("name: build", "name: convert")
    with pytest.raises(ConfigError) as info:
        load_config(text)
    msg = str(info.value)
    assert "is used twice" in msg and "`bash` is not allowed" in msg


def test_non_utf8_and_binary() -> None:
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(b"model_id: \xff\xfe\n")
    with pytest.raises(ConfigError, match="NUL byte"):
        load_config(b"model_id: a\x00b\n")


def test_oversized() -> None:
    with pytest.raises(ConfigError, match="larger than"):
        load_config("a: " + "x" * (2 << 20))


def test_cog_trt_llm_keys_it_reads_and_ignores() -> None:
    """Every key cog-trt-llm's own code reads has a meaning; it ignored the rest, and so do we, loudly."""
    cfg = load_config(SEED + "weight_format: pt\nmodel_tar_url: https://h/model.tar\nhf_token: hf_x\n")
    assert (cfg.model.weight_format, cfg.model.tar_url, cfg.hf_token) == ("pt", "https://h/model.tar", "hf_x")
    cfg = load_config(SEED + "notes: built for the demo\nmodel_name: tiny\n")
    assert cfg.warnings == (
        "`notes` is ignored: cog-trt-llm does not read it (neither does this tool)",
        "`model_name` is ignored: older cog-trt-llm versions read it as the model's directory name; "
        "`model_id` decides now",
    )
    with pytest.raises(ConfigError) as err:
        load_config(SEED + "weight_fromat: safetensors\nhf_tokn: x\n")
    assert err.value.problems == [
        "weight_fromat: unknown key; did you mean `weight_format`?",
        "hf_tokn: unknown key; did you mean `hf_token`?",
    ]
    with pytest.raises(ConfigError, match=r"weight_format: Input should be 'safetensors' or 'pt'"):
        load_config(SEED + "weight_format: gguf\n")
    cfg = load_config(SEED.replace("  output_dir: ./engine_outputs/\n", "  output_dir: ./engine_outputs/\n"
                                   "  input_dir: ./c-model\n  description: x\n", 1))  # fmt: skip
    assert cfg.warnings == (
        "build.`input_dir` is ignored: older cog-trt-llm versions took it and never used it",
        "build.`description` is ignored: cog-trt-llm does not read it (neither does this tool)",
    )
    with pytest.raises(ConfigError, match=r"build.argz: unknown key; did you mean `args`\?"):
        load_config(SEED.replace("  args:\n    model_dir", "  argz:\n    model_dir"))
