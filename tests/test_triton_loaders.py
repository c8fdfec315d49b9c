"""What a model's loader reads without a fallback: the ``model.py`` syntax-tree walk and the C++ table.

The patterns below are the ones the real tensorrtllm_backend / triton_backend ``model.py`` files use
(direct index, ``.get``, an alias of ``model_config['parameters']``, a helper that checks the key
first; tests/standin/README.md, "Triton templates"), plus the obvious guards a newer one might add.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trtllm_builder.outputs.tritonloaders import (
    ANY_PLACEHOLDER,
    Requirement,
    cpp_requirements,
    merge,
    python_requirements,
    version_tuple,
)
from trtllm_builder.outputs.tritonverify import python_model_requirements


def reqs(source: str) -> dict[str, Requirement]:
    return python_requirements(source, "m/1/model.py")


def test_direct_reads_are_required_and_get_reads_are_not() -> None:
    found = reqs(
        "import json\n"
        "def initialize(self, args):\n"
        "    model_config = json.loads(args['model_config'])\n"
        "    tok = model_config['parameters']['tokenizer_dir']['string_value']\n"
        "    skip = model_config['parameters'].get('skip_special_tokens')\n"
    )
    assert set(found) == {"tokenizer_dir"}
    assert found["tokenizer_dir"].source == "m/1/model.py:4"
    assert found["tokenizer_dir"].unset == frozenset()


def test_reads_through_an_alias_of_the_parameters() -> None:
    found = reqs(
        "params = model_config['parameters']\na = params['needed']['string_value']\nb = params.get('optional', {})\n"
    )
    assert set(found) == {"needed"}


@pytest.mark.parametrize(
    "source",
    [
        "if 'k' in cfg['parameters']:\n    v = cfg['parameters']['k']['string_value']\n",
        "if 'k' not in cfg['parameters']:\n    v = None\nelse:\n    v = cfg['parameters']['k']['string_value']\n",
        "try:\n    v = cfg['parameters']['k']['string_value']\nexcept KeyError:\n    v = None\n",
        "v = cfg['parameters']['k']['string_value'] if 'k' in cfg['parameters'] else None\n",
        # the helper of tensorrt_llm/1/model.py (get_parameter)
        "def get_parameter(model_config, name, pytype=str):\n"
        "    if name not in model_config['parameters']:\n"
        "        return None\n"
        "    return model_config['parameters'][name]['string_value']\n"
        "x = get_parameter(cfg, 'k', int)\n",
    ],
)
def test_guarded_reads_are_optional(source: str) -> None:
    assert reqs(source) == {}


def test_an_unguarded_helper_makes_its_callers_reads_direct() -> None:
    found = reqs(
        "def param(cfg, name):\n"
        "    return cfg['parameters'][name]['string_value']\n"
        "a = param(cfg, 'first')\n"
        "b = param(cfg, name='by_keyword')\n"
        "c = param(cfg, some_variable)\n"
    )
    assert set(found) == {"first", "by_keyword"}
    assert found["first"].source == "m/1/model.py:3"


def test_unset_spellings_come_from_the_comparisons_with_the_value() -> None:
    found = reqs(
        "a = cfg['parameters']['a']['string_value']\n"
        "if a == '${a}' or a == '':\n    a = None\n"
        "b = cfg['parameters']['b']['string_value']\n"
        "if b in ('', 'none'):\n    b = None\n"
        "c = cfg['parameters']['c']['string_value']\n"
        "if c.startswith('${'):\n    c = None\n"
        "d = cfg['parameters']['d']['string_value']\n"
        "if not d:\n    d = None\n"
    )
    assert found["a"].unset == {"", "${a}"}
    assert found["b"].unset == {"", "none"}
    assert found["c"].unset == {ANY_PLACEHOLDER}
    assert found["d"].unset == {""}


def test_requirement_semantics() -> None:
    both = Requirement("p", frozenset({"", "${p}"}), "x")
    assert both.unset_value("p") == ""
    only_placeholder = Requirement("p", frozenset({"${p}"}), "x")
    assert only_placeholder.unset_value("p") == "${p}"
    assert (
        only_placeholder.accepts("${p}") and not only_placeholder.accepts("") and not only_placeholder.accepts("${q}")
    )
    needs_value = Requirement("p", frozenset(), "x")
    assert needs_value.unset_value("p") is None
    assert needs_value.accepts("/models/x") and not needs_value.accepts("") and not needs_value.accepts("${p}")
    any_placeholder = Requirement("p", frozenset({ANY_PLACEHOLDER}), "x")
    assert any_placeholder.unset_value("v") == "${v}" and any_placeholder.accepts("${whatever}")
    merged = merge({"p": both}, {"p": only_placeholder})
    assert merged["p"].unset == {"${p}"} and merged["p"].source == "x; x"


def test_a_model_py_python_cannot_parse_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.py").write_text("def initialize(self, args:\n")
    (tmp_path / "1" / "lib").mkdir()
    (tmp_path / "1" / "lib" / "helper.py").write_text("v = cfg['parameters']['from_lib']['string_value']\n")
    found, problems = python_model_requirements(tmp_path / "1", "pre/1")
    assert set(found) == {"from_lib"}  # files under lib/ count: the model imports them
    assert found["from_lib"].source == "pre/1/lib/helper.py:1"
    assert len(problems) == 1 and "pre/1/model.py: Python cannot parse it" in problems[0]


@pytest.mark.parametrize(
    ("version", "keys"),
    [
        ("0.18.2", {"gpt_model_type"}),
        ("0.19.0", {"gpt_model_type", "tokenizer_dir", "guided_decoding_backend", "xgrammar_tokenizer_info_path"}),
        ("1.2.1", {"gpt_model_type", "tokenizer_dir", "guided_decoding_backend", "xgrammar_tokenizer_info_path"}),
        ("1.2.0rc2", {"gpt_model_type", "tokenizer_dir", "guided_decoding_backend", "xgrammar_tokenizer_info_path"}),
        (None, {"gpt_model_type", "tokenizer_dir", "guided_decoding_backend", "xgrammar_tokenizer_info_path"}),
    ],
)
def test_cpp_reads_by_release(version: str | None, keys: set[str]) -> None:
    assert set(cpp_requirements(version=version)) == keys
    # the keys a release's own template declares decide first
    assert set(cpp_requirements(version=version, declared={"gpt_model_type", "kv_cache_free_gpu_mem_fraction"})) == {
        "gpt_model_type"
    }


def test_version_tuple() -> None:
    assert version_tuple("0.19.0") == (0, 19, 0)
    assert version_tuple("1.2.0rc2") == (1, 2, 0)
    assert version_tuple("1.0.3.2510") == (1, 0, 3)
    assert version_tuple("unknown") is None and version_tuple(None) is None
