"""Args -> argv: every rule of the README's table, including the ones cog-trt-llm got wrong."""

from __future__ import annotations

import pytest

from trtllm_builder.errors import ConfigError
from trtllm_builder.plan.argv import display, render_args, substitute


@pytest.mark.parametrize(
    ("args", "argv"),
    [
        ({"tp_size": 2}, ["--tp_size", "2"]),
        ({"max_draft_len": 0}, ["--max_draft_len", "0"]),  # cog-trt-llm dropped 0
        ({"ratio": 0.0}, ["--ratio", "0.0"]),
        ({"remove_input_padding": None}, ["--remove_input_padding"]),
        ({"flag": ""}, ["--flag"]),
        ({"flag": True}, ["--flag"]),
        ({"flag": False}, []),
        ({"in-file": "/x"}, ["--in-file", "/x"]),  # key spelled as written
        ({"input_text": ["a b", "c"]}, ["--input_text", "a b", "c"]),
        ({"prompt": "hello; rm -rf / && echo $HOME"}, ["--prompt", "hello; rm -rf / && echo $HOME"]),
        ({"smoothquant": 0.5, "dtype": "float16"}, ["--smoothquant", "0.5", "--dtype", "float16"]),
    ],
)
def test_render(args: dict, argv: list[str]) -> None:
    assert render_args(args) == argv


def test_substitute_known_and_unknown() -> None:
    vals = {"model_dir": "/w/model", "steps.convert.output_dir": "/w/steps/convert"}
    assert substitute("{model_dir}/tokenizer", vals) == "/w/model/tokenizer"
    assert substitute("{steps.convert.output_dir}", vals) == "/w/steps/convert"
    assert substitute('{"json": 1}', vals) == '{"json": 1}'  # not a placeholder
    with pytest.raises(ConfigError, match=r"unknown placeholder `\{model_dri\}`.*did you mean `\{model_dir\}`"):
        substitute("{model_dri}", vals)


def test_display_redacts_and_quotes() -> None:
    line = display(["python", "x.py", "--msg", "a b", "--t", "hf_secret"], ["hf_secret"])
    assert line == "python x.py --msg 'a b' --t **********"
